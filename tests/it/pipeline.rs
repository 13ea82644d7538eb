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
    // Calls queued in one batch share a bundle (one nonce); the transactions have consecutive ones.
    sponsor_nonces.sort();
    sponsor_nonces.dedup();
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
    use streampay_relayer::store::{AttemptKind, SignedAttempt};
    let app = spawn_app().await;
    let item = |meta_nonce: u64| app.fake_call(wallet().address(), meta_nonce);
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
        .enqueue_transactions(&batch, &[vec![0], vec![1], vec![2]], 5, |i, _| {
            Ok((attempt(B256::repeat_byte(if i == 2 { 1 } else { 2 })), None))
        })
        .await;
    let clash = clash.map(|_| ()).unwrap_err();
    assert!(format!("{clash:#}").contains("queue"), "{clash:#}");
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM relay_transactions").fetch_one(app.store.pool()).await.unwrap();
    assert_eq!(rows, 0, "no row of a failed batch is kept");
    // The nonces it took were given back: the next batch starts at the chain's count.
    let queued = app
        .store
        .enqueue_transactions(&batch, &[vec![0], vec![1], vec![2]], 5, |i, nonce| {
            Ok((attempt(B256::with_last_byte(i as u8 + 10 * nonce as u8)), None))
        })
        .await
        .unwrap();
    let nonces: Vec<u64> = queued.iter().map(|(_, n, _)| *n).collect();
    assert_eq!(nonces, vec![5, 6, 7]);
    let attempts: i64 =
        sqlx::query_scalar("SELECT count(*) FROM tx_attempts").fetch_one(app.store.pool()).await.unwrap();
    assert_eq!(attempts, 3, "one attempt per row");
}

/// Expected history of a row: `(reference, operations, amounts as (position, operation, value))`,
/// `None` operations for a row written without history.
type ExpectedMeta = (Option<String>, Option<Vec<String>>, Vec<(i32, String, String)>);

/// The history columns of row `id` as stored: reference, operations, amounts by position.
async fn stored_meta(app: &crate::harness::TestApp, id: i64) -> ExpectedMeta {
    let (reference, operations): (Option<String>, Option<Vec<String>>) =
        sqlx::query_as("SELECT reference, operations FROM relay_transactions WHERE id = $1")
            .bind(id)
            .fetch_one(app.store.pool())
            .await
            .unwrap();
    let amounts: Vec<(i32, String, String)> = sqlx::query_as(
        "SELECT position, operation, amount::text FROM relay_transaction_amounts WHERE transaction_id = $1
         ORDER BY position",
    )
    .bind(id)
    .fetch_all(app.store.pool())
    .await
    .unwrap();
    (reference, operations, amounts)
}

#[tokio::test]
async fn one_batch_writes_each_rows_own_reference_operations_and_amounts() {
    // 50 rows of one batch, with ragged history: none at all, a reference only, operations
    // without amounts, amounts at scattered positions, amounts up to uint256's maximum. The
    // batch writes them all in one statement; each row must get exactly its own. Rows 10..15 and
    // 30, 32, 34 go out as two bundles (one nonce, one hash and one attempt each, the rows naming
    // their leader), the others alone.
    use alloy::primitives::{B256, Bytes};
    use streampay_relayer::store::{AttemptKind, BundleTx, NewTransaction, SignedAttempt, TxMeta};
    let app = spawn_app().await;
    // Nobody sends these rows (their signed bytes are fakes): the rows stay as queued.
    app.stop_pipelines().await;
    let meta = |i: usize| -> Option<TxMeta> {
        let ops = |n: usize, op: &str| (0..n).map(|_| op.to_string()).collect::<Vec<_>>();
        match i % 5 {
            0 => None,
            1 => Some(TxMeta {
                reference: Some(format!("order-{i}")),
                operations: ops(i % 4 + 1, "pay"),
                amounts: (0..i % 4 + 1).map(|j| (j, "pay".to_string(), U256::from(i * 1000 + j))).collect(),
            }),
            2 => Some(TxMeta { reference: None, operations: ops(2, "subscribe"), amounts: vec![] }),
            3 => Some(TxMeta { reference: Some(format!("label {i}")), operations: vec![], amounts: vec![] }),
            _ => Some(TxMeta {
                reference: None,
                operations: vec!["subscribe".into(), "deposit".into(), "subscribe".into(), "withdraw".into()],
                amounts: vec![(1, "deposit".into(), U256::MAX - U256::from(i)), (3, "withdraw".into(), U256::from(i))],
            }),
        }
    };
    let batch: Vec<NewTransaction> =
        (0..50).map(|i| NewTransaction { history: meta(i), ..app.fake_call(wallet().address(), i as u64) }).collect();
    let bundles: [Vec<usize>; 2] = [(10..15).collect(), vec![30, 32, 34]];
    let mut slots: Vec<Vec<usize>> = Vec::new();
    for i in 0..50 {
        match bundles.iter().find(|b| b.contains(&i)) {
            Some(b) if b[0] == i => slots.push(b.clone()),
            Some(_) => {}
            None => slots.push(vec![i]),
        }
    }
    let queued = app
        .store
        .enqueue_transactions(&batch, &slots, 1_000, |s, _| {
            let attempt = SignedAttempt {
                hash: B256::from(U256::from(s + 1)),
                raw: Bytes::from(vec![9, s as u8]),
                kind: AttemptKind::Call,
                max_fee_per_gas: 2,
                max_priority_fee_per_gas: 1,
            };
            let bundle = (slots[s].len() > 1).then(|| BundleTx {
                calldata: Bytes::from(vec![7, s as u8]),
                gas_limit: 100_000 * slots[s].len() as u64,
                deadline: 1,
            });
            Ok((attempt, bundle))
        })
        .await
        .unwrap();
    assert_eq!(queued.len(), 50);
    let ids: Vec<i64> = queued.iter().map(|(id, _, _)| *id).collect();
    assert!(ids.windows(2).all(|w| w[0] < w[1]), "rows numbered in batch order: {ids:?}");
    let slot_of = |i: usize| slots.iter().position(|s| s.contains(&i)).unwrap();
    for (i, (id, nonce, hash)) in queued.iter().enumerate() {
        let s = slot_of(i);
        assert_eq!(*nonce, 1_000 + s as u64, "row {i}");
        assert_eq!(*hash, B256::from(U256::from(s + 1)), "row {i}");
        let row: (i64, Vec<u8>, Vec<u8>, Option<i64>, Option<i32>) = sqlx::query_as(
            "SELECT sponsor_nonce, signer, tx_hash, bundle_id, bundle_index FROM relay_transactions WHERE id = $1",
        )
        .bind(id)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        let bundle = (slots[s].len() > 1).then(|| {
            let leader = queued[slots[s][0]].0;
            (Some(leader), Some(slots[s].iter().position(|j| *j == i).unwrap() as i32))
        });
        let (bundle_id, bundle_index) = bundle.unwrap_or((None, None));
        assert_eq!(row, (*nonce as i64, batch[i].signer.to_vec(), hash.to_vec(), bundle_id, bundle_index), "row {i}");
        // One attempt per transaction: the leader's (or the lone call's) holds the signed bytes.
        let attempts: Vec<(Vec<u8>, Vec<u8>)> =
            sqlx::query_as("SELECT tx_hash, raw_tx FROM tx_attempts WHERE transaction_id = $1")
                .bind(id)
                .fetch_all(app.store.pool())
                .await
                .unwrap();
        if bundle_index.is_some_and(|p| p > 0) {
            assert!(attempts.is_empty(), "row {i} follows its leader: {attempts:?}");
        } else {
            assert_eq!(attempts, vec![(hash.to_vec(), vec![9, s as u8])], "row {i}");
        }
        if bundle_index == Some(0) {
            let b: (Vec<u8>, i64, i32) =
                sqlx::query_as("SELECT calldata, gas_limit, size FROM relay_bundles WHERE leader_id = $1")
                    .bind(id)
                    .fetch_one(app.store.pool())
                    .await
                    .unwrap();
            assert_eq!(b, (vec![7, s as u8], 100_000 * slots[s].len() as i64, slots[s].len() as i32), "row {i}");
        }
        let want: ExpectedMeta = match meta(i) {
            None => (None, None, vec![]),
            Some(m) => (
                m.reference,
                Some(m.operations),
                m.amounts.into_iter().map(|(p, o, a)| (p as i32, o, a.to_string())).collect(),
            ),
        };
        assert_eq!(stored_meta(&app, *id).await, want, "row {i}");
    }
}

#[tokio::test]
async fn concurrent_executes_queued_in_one_batch_keep_each_calls_reference_operations_and_amounts() {
    // 50 executes arrive together while the sponsor's nonce row is locked, so the pipeline queues
    // them in one or few batches (group commit). Deposits, multi-payment and subscription
    // batches, with and without a reference: each row and the history must show exactly its own.
    let app = spawn_app().await;
    const N: usize = 50;
    let users: Vec<_> = (0..N).map(|_| wallet()).collect();
    app.mint_many(&users.iter().map(|u| u.address()).collect::<Vec<_>>(), tokens(20)).await;
    // Users 0..15 pay (i % 3 != 2) or subscribe (i % 3 == 2) from a deposited balance; the
    // others deposit.
    let funded = 15;
    let deposits = futures::future::join_all(users[..funded].iter().map(|u| async {
        let built = app.build("/api/v1/USDC/payments/deposit", &json!({"From": u.address(), "Amount": "10"})).await;
        app.execute_ok(u, &built).await;
    }));
    deposits.await;
    let mut bodies = Vec::new();
    // Per call: reference, operations, and amounts as `(operation, amount)` as the API shows them.
    type Submitted = (Option<String>, Vec<String>, Vec<(String, String)>);
    let mut expected: Vec<Submitted> = Vec::new();
    for (i, u) in users.iter().enumerate() {
        let (path, body, ops, amounts): (&str, serde_json::Value, Vec<String>, Vec<(String, String)>) = if i >= funded {
            let amount = format!("{}.{}3", 1 + i % 5, i);
            (
                "/api/v1/USDC/payments/deposit",
                json!({"From": u.address(), "Amount": amount}),
                vec!["deposit".into()],
                vec![("deposit".into(), amount)],
            )
        } else if i % 3 != 2 {
            let amounts: Vec<String> = (0..i % 3 + 2).map(|j| format!("{}.{}7", j + 1, i)).collect();
            let payments: Vec<_> = amounts.iter().map(|a| json!({"To": wallet().address(), "Amount": a})).collect();
            (
                "/api/v1/USDC/batch/payments",
                json!({"From": u.address(), "Payments": payments}),
                amounts.iter().map(|_| "pay".to_string()).collect(),
                amounts.iter().map(|a| ("pay".to_string(), a.clone())).collect(),
            )
        } else {
            (
                "/api/v1/USDC/batch/subscriptions",
                json!({"From": u.address(), "Subscriptions": [
                    {"Author": wallet().address(), "SubscriptionRate": "1"},
                    {"Author": wallet().address(), "SubscriptionRate": "2"},
                ]}),
                vec!["subscribe".into(), "subscribe".into()],
                vec![],
            )
        };
        let built = app.build(path, &body).await;
        let mut exec = app.signed_execute_body(u, &built).await;
        let reference = (i % 2 == 1).then(|| format!("batch-ref-{i}"));
        if let Some(r) = &reference {
            exec["Reference"] = json!(r);
        }
        bodies.push(exec);
        expected.push((reference, ops, amounts));
    }

    // Hold the sponsor's nonce row: the first enqueue waits on it, every other call waits for the
    // lane and joins the next batch. On connections of the test's own, not the app's pool (five
    // connections, which the 50 executes need).
    use sqlx::Connection;
    let mut locker = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
    let mut watcher = sqlx::PgConnection::connect(&app.db_url).await.unwrap();
    let mut lock = locker.begin().await.unwrap();
    let locked: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM sponsor_accounts WHERE chain_id = $1 AND address = $2 FOR UPDATE")
            .bind(app.chain_id as i64)
            .bind(app.sponsor.as_slice())
            .fetch_optional(&mut *lock)
            .await
            .unwrap();
    assert_eq!(locked, Some(1), "the sponsor's row exists (the funding deposits used it)");
    let executes = futures::future::join_all(bodies.iter().map(|b| async {
        let resp = app.execute_async(b).await;
        let status = resp.status();
        let out: serde_json::Value = resp.json().await.unwrap();
        assert_eq!(status, StatusCode::ACCEPTED, "{out}");
        out
    }));
    let release_when_all_admitted = async {
        // An admitted call holds its reservation until it is queued: 50 reservations are 50
        // calls past admission, at (or a policy read before) the enqueue.
        let end = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
        loop {
            let admitted: i64 = sqlx::query_scalar("SELECT count(*) FROM admission_reservations")
                .fetch_one(&mut watcher)
                .await
                .unwrap();
            if admitted == N as i64 {
                break;
            }
            assert!(tokio::time::Instant::now() < end, "only {admitted} of {N} executes reached the queue");
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        lock.rollback().await.unwrap();
    };
    let (answers, ()) = tokio::join!(executes, release_when_all_admitted);

    // Queued together: some batch holds several of them (rows of one transaction share its
    // `now()`), so the rows really went through one multi-row statement.
    let ids: Vec<i64> = answers
        .iter()
        .map(|a| a["TransactionId"].as_i64().unwrap_or_else(|| panic!("no transaction id: {a}")))
        .collect();
    let largest: i64 = sqlx::query_scalar(
        "SELECT max(n) FROM (SELECT count(*) AS n FROM relay_transactions WHERE id = ANY($1) GROUP BY created_at) b",
    )
    .bind(&ids)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(largest >= 2, "the executes were queued one per transaction (largest batch {largest})");

    let (status, page) = app.get("/api/v1/transactions?limit=100").await;
    assert_eq!(status, StatusCode::OK, "{page}");
    let listed = page["Transactions"].as_array().unwrap();
    for (i, (&id, (reference, ops, amounts))) in ids.iter().zip(&expected).enumerate() {
        let (stored_ref, stored_ops, stored_amounts) = stored_meta(&app, id).await;
        assert_eq!(&stored_ref, reference, "call {i}");
        assert_eq!(stored_ops.as_ref(), Some(ops), "call {i}");
        assert_eq!(
            stored_amounts.iter().map(|(_, o, _)| o.clone()).collect::<Vec<_>>(),
            amounts.iter().map(|(o, _)| o.clone()).collect::<Vec<_>>(),
            "call {i}"
        );
        let row = listed
            .iter()
            .find(|t| t["Id"].as_i64() == Some(id))
            .unwrap_or_else(|| panic!("call {i} (row {id}) missing from the history"));
        assert_eq!(row["From"], json!(users[i].address().to_checksum(None)), "call {i}");
        assert_eq!(row["Reference"], json!(reference), "call {i}");
        assert_eq!(row["Operations"], json!(ops), "call {i}");
        let shown: Vec<(String, String)> = row["Amounts"]
            .as_array()
            .unwrap()
            .iter()
            .map(|a| (a["Operation"].as_str().unwrap().to_string(), a["Amount"].as_str().unwrap().to_string()))
            .collect();
        assert_eq!(&shown, amounts, "call {i}");
    }
}

#[tokio::test]
async fn a_queued_calls_admission_reservation_goes_in_the_statement_that_writes_its_row() {
    // A call's reservation counts until its row does, in the statement that writes the row: a
    // locked batch and a leased one both delete their calls' reservations and no other; a leased
    // batch that finds the counter moved writes nothing and leaves them counting.
    use alloy::primitives::{B256, Bytes, U256};
    use streampay_relayer::store::{AttemptKind, NewTransaction, Reservation, SignedAttempt};
    let app = spawn_app().await;
    // Nobody sends these rows (their signed bytes are fakes).
    app.stop_pipelines().await;
    let reserved = || async {
        let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM admission_reservations ORDER BY id")
            .fetch_all(app.store.pool())
            .await
            .unwrap();
        ids
    };
    let sign = |s: usize, _| {
        Ok((
            SignedAttempt {
                hash: B256::from(U256::from(s + 1 + 100 * usize::from(s > 9))),
                raw: Bytes::from(vec![9, s as u8]),
                kind: AttemptKind::Call,
                max_fee_per_gas: 2,
                max_priority_fee_per_gas: 1,
            },
            None,
        ))
    };
    let (a, b, c) = (app.reserve(1, 1_001).await, app.reserve(2, 1_002).await, app.reserve(3, 1_003).await);
    let ids = |rs: &[Reservation]| rs.iter().map(|r| r.id().unwrap()).collect::<Vec<_>>();
    assert_eq!(reserved().await, ids(&[a, b, c]));

    // A locked batch of two calls carrying a and b, and one without a reservation.
    let batch: Vec<NewTransaction> = [Some(a), Some(b), None]
        .iter()
        .enumerate()
        .map(|(i, r)| NewTransaction {
            reservation: r.unwrap_or(Reservation::NONE),
            ..app.fake_call(wallet().address(), i as u64)
        })
        .collect();
    let slots: Vec<Vec<usize>> = (0..batch.len()).map(|i| vec![i]).collect();
    let queued = app.store.enqueue_transactions(&batch, &slots, 1_000, sign).await.unwrap();
    assert_eq!(queued.len(), 3);
    assert_eq!(reserved().await, ids(&[c]), "a's and b's reservations went with their rows, c's stays");

    // A leased batch carrying c: refused while the counter does not read its base (nothing
    // written, c still counts), then written at the right base (c gone).
    sqlx::query("UPDATE sponsor_accounts SET lease_owner = 'test', lease_until = now() + interval '1 hour'")
        .execute(app.store.pool())
        .await
        .unwrap();
    let next: i64 =
        sqlx::query_scalar("SELECT next_nonce FROM sponsor_accounts").fetch_one(app.store.pool()).await.unwrap();
    let leased = [NewTransaction { reservation: c, ..app.fake_call(wallet().address(), 7) }];
    let sign_late = |s: usize, _| sign(s + 10, 0);
    let stale = app.store.enqueue_leased(&leased, &[vec![0]], "test", next as u64 + 1, sign_late).await.unwrap();
    assert!(stale.is_none(), "a leased batch at a base the counter does not read writes nothing");
    assert_eq!(reserved().await, ids(&[c]), "c counts until its row does");
    let written = app.store.enqueue_leased(&leased, &[vec![0]], "test", next as u64, sign_late).await.unwrap();
    assert_eq!(written.map(|w| w.len()), Some(1));
    assert_eq!(reserved().await, Vec::<i64>::new(), "c's reservation went with its row");
}

#[tokio::test]
async fn a_caller_that_goes_away_while_its_locked_batch_is_written_leaves_every_call_of_it_queued_once() {
    // Without the lease, a batch is a transaction that takes its nonces under the sponsor row's
    // lock: a caller dropped inside it used to leave it rolled back (its own call lost) or,
    // between statements, holding the row lock.
    the_writer_goes_away(false).await;
}

#[tokio::test]
async fn a_caller_that_goes_away_while_its_leased_batch_is_written_leaves_every_call_of_it_queued_once() {
    // The lease holder writes a batch in one statement, which the database finishes whether or
    // not its caller is still there: the other calls of the batch used to hear nothing and queue
    // themselves a second time.
    the_writer_goes_away(true).await;
}

/// The caller holding the sponsor's enqueue lock writes a batch of its own call (a) and another
/// caller's (b). It goes away (a client that disconnects) while the batch waits for the
/// sponsor's row, locked by the test. The batch must still be written, once, and b answered
/// with its row: b must not queue its call a second time. `leased`: the app's worker holds the
/// sponsor's lease and the batch is the holder's one statement (else the pipeline is stopped and
/// the batch is a locked transaction).
async fn the_writer_goes_away(leased: bool) {
    use alloy::primitives::Address;
    use std::time::Duration;
    use streampay_relayer::pipeline::PipelineSettings;
    // A long linger, so the caller holding the lock waits for the one announced as arriving.
    let settings = PipelineSettings { bundle_linger: Duration::from_secs(10), ..PipelineSettings::default() };
    let app = crate::harness::spawn_app_with_pipeline(settings).await;
    let pipeline = app.chain().pipeline.clone();
    let owner = || async {
        sqlx::query_scalar::<_, Option<String>>("SELECT lease_owner FROM sponsor_accounts WHERE address = $1")
            .bind(app.sponsor.as_slice())
            .fetch_optional(app.store.pool())
            .await
            .unwrap()
            .flatten()
    };
    if leased {
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        while owner().await.is_none() {
            assert!(tokio::time::Instant::now() < end, "the app's worker never took the sponsor's lease");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    } else {
        app.stop_pipelines().await;
    }
    // A first call makes the sponsor's row; the lease holder counts its nonces from there. (Its
    // signed bytes, as a's and b's, are fakes: the node refuses them, and the worker cancels
    // the calls, whose deadline has passed.)
    pipeline.enqueue(app.fake_call(Address::repeat_byte(0xc3), 0)).await.unwrap();
    let (signer_a, signer_b) = (Address::repeat_byte(0xa1), Address::repeat_byte(0xb2));
    let mut row_lock = app.store.pool().begin().await.unwrap();
    sqlx::query("SELECT 1 FROM sponsor_accounts WHERE address = $1 FOR UPDATE")
        .bind(app.sponsor.as_slice())
        .fetch_one(&mut *row_lock)
        .await
        .unwrap();

    let arriving = pipeline.arriving(app.sponsor).expect("the app's sponsor");
    let mut a = Box::pin(pipeline.enqueue_arriving(app.fake_call(signer_a, 0), None, false));
    // a takes the enqueue lock and lingers for the call announced as arriving.
    assert!(
        tokio::time::timeout(Duration::from_secs(1), &mut a).await.is_err(),
        "a was queued while the row was locked"
    );
    let b = tokio::spawn({
        let (pipeline, call) = (pipeline.clone(), app.fake_call(signer_b, 0));
        async move { pipeline.enqueue_arriving(call, Some(arriving), false).await }
    });
    // b arrives and joins a's batch, which then waits for the row: in the leased statement, or
    // in the locked transaction's nonce reservation.
    let end = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'
               AND (query LIKE 'WITH claimed%') = $1",
        )
        .bind(leased)
        .fetch_one(app.store.pool())
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(tokio::time::Instant::now() < end, "the batch never waited for the sponsor's row");
        tokio::select! {
            done = &mut a => panic!("a finished while the row was locked: {done:?}"),
            _ = tokio::time::sleep(Duration::from_millis(20)) => {}
        }
    }
    // a's caller goes away mid-write; then the row is free.
    drop(a);
    row_lock.rollback().await.unwrap();

    let b = tokio::time::timeout(Duration::from_secs(20), b).await.expect("b was never answered").unwrap().unwrap();
    let rows = |signer: Address| {
        let pool = app.store.pool().clone();
        async move {
            let ids: Vec<i64> = sqlx::query_scalar("SELECT id FROM relay_transactions WHERE signer = $1 ORDER BY id")
                .bind(signer.as_slice())
                .fetch_all(&pool)
                .await
                .unwrap();
            ids
        }
    };
    // a's row: written by the batch, though its caller went away (b's answer came after it).
    assert_eq!(rows(signer_a).await.len(), 1, "a's call queued once");
    assert_eq!(rows(signer_b).await, vec![b.id], "b's call queued once, as the row it was answered with");
    assert_eq!(owner().await.is_some(), leased, "the lease as the case says");
}
