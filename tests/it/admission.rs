//! Issue 12, admission nobody can drain: strict calldata, size and gas caps, the cool-down of a
//! signed call that reverted on chain, reputation (throttle, then ban) per signer and per key,
//! and daily budgets per key and per signer that hold across two app instances on one database.

use std::time::Duration;

use alloy::{
    primitives::{Address, Bytes, U256},
    providers::Provider,
    signers::{Signer, local::PrivateKeySigner},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::{
    api::{Settings, admission::AdmissionSettings},
    chain::{
        StreamPay,
        eip712::{self, Domain},
    },
};

use crate::harness::{TestApp, assert_error, internal, spawn_app, spawn_app_with, wallet};

const EXECUTE: &str = "/api/v1/USDC/meta/execute";

fn settings(admission: AdmissionSettings) -> Settings {
    Settings { receipt_timeout: Duration::from_secs(30), admission, ..crate::harness::serve_settings() }
}

fn pay(from: Address, to: Address, amount: &str) -> Value {
    json!({"From": from, "To": to, "Amount": amount})
}

/// An execute body for `data` signed by `signer` with the build's traits (so only the data differs).
async fn signed_with_data(app: &TestApp, signer: &PrivateKeySigner, built: &Value, data: &[u8]) -> Value {
    let t = &built["Transaction"];
    let traits: U256 = t["Traits"].as_str().unwrap().parse().unwrap();
    let digest = eip712::signed_call_digest(
        &Domain::streampay(app.chain_id, app.contract),
        signer.address(),
        traits,
        &Bytes::copy_from_slice(data),
    );
    let sig = signer.sign_hash(&digest).await.unwrap();
    json!({
        "From": t["From"], "Signature": format!("0x{}", alloy::hex::encode(sig.as_bytes())),
        "Data": format!("0x{}", alloy::hex::encode(data)), "Nonce": t["Nonce"], "Sponsor": built["Sponsor"],
        "Deadline": t["Deadline"], "Traits": t["Traits"],
    })
}

#[tokio::test]
async fn padded_calldata_is_refused_even_when_signed() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 5).await;
    let built = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "1")).await;
    let data: Bytes = built["Transaction"]["Data"].as_str().unwrap().parse().unwrap();
    for junk in [vec![0u8; 32], vec![0xff; 64], vec![1]] {
        let mut padded = data.to_vec();
        padded.extend_from_slice(&junk);
        let body = signed_with_data(&app, &user, &built, &padded).await;
        assert_error(&app.post(EXECUTE, &body).await, StatusCode::UNPROCESSABLE_ENTITY, "non_canonical_calldata");
    }
    // Dirty high bytes in the address word.
    let mut dirty = data.to_vec();
    dirty[5] = 0x77;
    let body = signed_with_data(&app, &user, &built, &dirty).await;
    let resp = app.post(EXECUTE, &body).await;
    assert_eq!(resp.0, StatusCode::UNPROCESSABLE_ENTITY, "{}", resp.1);
    // Over the size cap: refused before anything else.
    let mut huge = data.to_vec();
    huge.resize(40 * 1024, 0xff);
    let body = signed_with_data(&app, &user, &built, &huge).await;
    assert_error(&app.post(EXECUTE, &body).await, StatusCode::BAD_REQUEST, "calldata_too_large");
    // Nothing was sent; the canonical call still runs.
    app.execute_ok(&user, &built).await;
    assert_eq!(app.balance_of(user.address()).await, internal(4));
}

#[tokio::test]
async fn a_call_over_its_operations_gas_cap_is_422() {
    let mut admission = AdmissionSettings::default();
    admission.gas_per_operation.insert("pay".into(), 1);
    admission.gas_base = 50_000;
    let app = spawn_app_with(settings(admission)).await;
    let user = wallet();
    app.fund(&user, 5).await; // deposits keep their default cap
    let built = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "1")).await;
    let resp = app.execute(&user, &built).await;
    assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "gas_cap_exceeded");
    assert_eq!(app.balance_of(user.address()).await, internal(5), "nothing sent");
}

/// Has `user`'s relayed `pay(amount)` pass simulation and then revert on chain: the user
/// front-runs it with a direct withdrawal of `withdraw` (both in one block). Returns the signed
/// execute body.
async fn revert_on_chain(app: &TestApp, key: &str, user: &PrivateKeySigner, amount: &str, withdraw: u64) -> Value {
    let raw = |method: &'static str, params: Value| {
        let p = app.provider.clone();
        async move { p.raw_request::<_, Value>(method.into(), params).await.unwrap() }
    };
    raw("anvil_setBalance", json!([user.address(), "0xde0b6b3a7640000"])).await;
    raw("anvil_impersonateAccount", json!([user.address()])).await;
    let (status, built) =
        app.post_with_key("/api/v1/USDC/payments/", Some(key), &pay(user.address(), wallet().address(), amount)).await;
    assert_eq!(status, StatusCode::OK, "{built}");
    let body = app.signed_execute_body(user, &built).await;
    raw("evm_setAutomine", json!([false])).await;
    let resp = app
        .http
        .post(app.url(EXECUTE))
        .header("X-API-Key", key)
        .header("Prefer", "respond-async")
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let accepted: Value = resp.json().await.unwrap();
    assert_eq!(status, StatusCode::ACCEPTED, "{accepted}");
    let gwei = 1_000_000_000u128;
    let own = StreamPay::new(app.contract, &app.provider)
        .withdraw(internal(withdraw))
        .from(user.address())
        .gas(200_000)
        .max_priority_fee_per_gas(1000 * gwei)
        .max_fee_per_gas(2000 * gwei)
        .send()
        .await
        .unwrap();
    raw("evm_mine", json!([])).await;
    raw("evm_setAutomine", json!([true])).await;
    assert!(own.get_receipt().await.unwrap().status(), "the user's own withdrawal");
    let id = accepted["TransactionId"].as_i64().unwrap();
    let last = std::sync::Mutex::new(Value::Null);
    let waited = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let (_, t) = app.get_with_key(&format!("/api/v1/transactions/{id}"), Some(key)).await;
            if t["State"] == "failed" {
                assert_eq!(t["Failure"], "reverted", "{t}");
                return;
            }
            *last.lock().unwrap() = t;
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    })
    .await;
    assert!(waited.is_ok(), "the relayed call was not recorded as reverted within 30 s: {}", last.lock().unwrap());
    body
}

/// A pay by `user` through a fresh key is relayed (200): another key's record does not count.
async fn another_key_still_relays(app: &TestApp, user: &PrivateKeySigner) {
    let clean = app.store.create_api_key("clean", &[app.sponsor], true).await.unwrap();
    let (_, built) = app
        .post_with_key("/api/v1/USDC/payments/", Some(&clean.key), &pay(user.address(), wallet().address(), "1"))
        .await;
    let body = app.signed_execute_body(user, &built).await;
    let (status, resp) = app.post_with_key(EXECUTE, Some(&clean.key), &body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
}

async fn deposit_directly(app: &TestApp, user: Address, n: u64) {
    app.deposit_directly(user, n).await;
}

#[tokio::test]
async fn a_call_that_reverts_on_chain_cools_down_and_its_sender_and_key_are_throttled() {
    let admission = AdmissionSettings {
        throttle_after_reverts: 1,
        throttle_interval_secs: 3600,
        ban_after_reverts: 100,
        ..AdmissionSettings::default()
    };
    let app = spawn_app_with(settings(admission)).await;
    let (user, bystander, stranger) = (wallet(), wallet(), wallet());
    for u in [&user, &bystander, &stranger] {
        app.fund(u, 10).await;
    }
    let key = app.api_key.clone();
    let signed = revert_on_chain(&app, &key, &user, "8", 5).await;

    // The same signed call would simulate again once the balance is back: held back anyway.
    deposit_directly(&app, user.address(), 10).await;
    assert_error(&app.post(EXECUTE, &signed).await, StatusCode::TOO_MANY_REQUESTS, "call_cooling_down");
    // Any other call of the sender: throttled (one call per interval after a revert).
    let other = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "1")).await;
    assert_error(&app.execute(&user, &other).await, StatusCode::TOO_MANY_REQUESTS, "signer_throttled");
    // The key that relayed it is throttled too, for everyone using it.
    let b = app.build("/api/v1/USDC/payments/", &pay(bystander.address(), wallet().address(), "1")).await;
    assert_error(&app.execute(&bystander, &b).await, StatusCode::TOO_MANY_REQUESTS, "key_throttled");
    another_key_still_relays(&app, &stranger).await;
    // The refused calls reached nothing.
    assert_eq!(app.balance_of(bystander.address()).await, internal(10));
}

#[tokio::test]
async fn repeated_offenders_are_refused_403() {
    let admission =
        AdmissionSettings { throttle_after_reverts: 100, ban_after_reverts: 2, ..AdmissionSettings::default() };
    let app = spawn_app_with(settings(admission)).await;
    let (user, bystander) = (wallet(), wallet());
    app.fund(&user, 20).await;
    app.fund(&bystander, 10).await;
    let key = app.api_key.clone();
    revert_on_chain(&app, &key, &user, "16", 5).await; // 15 left
    // One revert: still admitted (not banned, throttling off).
    revert_on_chain(&app, &key, &user, "14", 5).await; // 10 left
    assert_signer_and_key_banned(&app, &user, &bystander).await;
    assert_eq!(app.balance_of(user.address()).await, internal(10));
}

/// `user`'s next call is refused as its signer's (`signer_banned`), and `bystander`'s, a clean
/// signer on the same key, as the key's (`key_banned`).
async fn assert_signer_and_key_banned(app: &TestApp, user: &PrivateKeySigner, bystander: &PrivateKeySigner) {
    let next = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "1")).await;
    assert_error(&app.execute(user, &next).await, StatusCode::FORBIDDEN, "signer_banned");
    let b = app.build("/api/v1/USDC/payments/", &pay(bystander.address(), wallet().address(), "1")).await;
    assert_error(&app.execute(bystander, &b).await, StatusCode::FORBIDDEN, "key_banned");
}

/// With no daily budget for the key or the signer, admission takes its one-statement path (no
/// advisory locks, nothing reserved): cool-down, ban per signer and per key still hold, and an
/// unaffected key still relays.
#[tokio::test]
async fn without_budgets_cool_down_and_bans_still_hold() {
    let admission = AdmissionSettings {
        throttle_after_reverts: 100,
        ban_after_reverts: 2,
        key_daily_budget_wei: None,
        signer_daily_budget_wei: None,
        ..AdmissionSettings::default()
    };
    let app = spawn_app_with(settings(admission)).await;
    let (user, bystander, stranger) = (wallet(), wallet(), wallet());
    app.fund(&user, 20).await;
    app.fund(&bystander, 10).await;
    app.fund(&stranger, 10).await;
    let key = app.api_key.clone();
    let signed = revert_on_chain(&app, &key, &user, "16", 5).await; // 15 left
    deposit_directly(&app, user.address(), 10).await; // 25: the same call would now succeed
    assert_error(&app.post(EXECUTE, &signed).await, StatusCode::TOO_MANY_REQUESTS, "call_cooling_down");
    // One revert: still admitted (not banned, throttling off).
    revert_on_chain(&app, &key, &user, "22", 5).await; // 20 left
    assert_signer_and_key_banned(&app, &user, &bystander).await;
    assert_eq!(app.balance_of(user.address()).await, internal(20));
    assert_eq!(app.balance_of(bystander.address()).await, internal(10));
    another_key_still_relays(&app, &stranger).await;
    assert_eq!(app.balance_of(stranger.address()).await, internal(9));
}

#[tokio::test]
async fn a_key_over_its_daily_budget_is_429_key_daily_budget_exceeded() {
    let app = spawn_app_with(settings(AdmissionSettings {
        key_daily_budget_wei: Some(U256::from(1u64)),
        ..AdmissionSettings::default()
    }))
    .await;
    let user = wallet();
    app.deposit_directly(user.address(), 5).await;
    let built = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "1")).await;
    assert_error(&app.execute(&user, &built).await, StatusCode::TOO_MANY_REQUESTS, "key_daily_budget_exceeded");
    assert_eq!(app.balance_of(user.address()).await, internal(5), "nothing sent");
}

#[tokio::test]
async fn budgets_are_on_by_default() {
    let s = AdmissionSettings::default();
    assert!(s.key_daily_budget_wei.is_some() && s.signer_daily_budget_wei.is_some());
    assert_eq!(Settings::default().admission, s);
}

/// The per-signer and per-key budgets, enforced in Postgres: two app instances (as two `serve`
/// processes) on one database, admitting calls concurrently, never admit more than the budget.
#[tokio::test]
async fn daily_budgets_hold_across_two_app_instances_on_one_database() {
    let app = spawn_app().await;
    // What one pay costs at worst here (gas limit at the max fee): measured on a helper's call.
    let helper = wallet();
    app.fund(&helper, 5).await;
    let built = app.build("/api/v1/USDC/payments/", &pay(helper.address(), wallet().address(), "1")).await;
    let id = app.execute_ok(&helper, &built).await["TransactionId"].as_i64().unwrap();
    let one: String = sqlx::query_scalar(
        "SELECT (t.gas_limit::numeric * a.max_fee_per_gas::numeric)::text FROM relay_transactions t
         JOIN tx_attempts a ON a.transaction_id = t.id WHERE t.id = $1 ORDER BY a.id DESC LIMIT 1",
    )
    .bind(id)
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    let one: U256 = one.parse().unwrap();
    let budget = one * U256::from(5) / U256::from(2);
    let limited =
        || settings(AdmissionSettings { signer_daily_budget_wei: Some(budget), ..AdmissionSettings::default() });
    let (a, b) = (app.instance_with(limited()).await, app.instance_with(limited()).await);

    let user = wallet();
    // Funded outside the relayer, so the signer's budget starts at zero.
    deposit_directly(&app, user.address(), 10).await;
    let mut bodies = Vec::new();
    for _ in 0..8 {
        let built = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "1")).await;
        bodies.push(app.signed_execute_body(&user, &built).await);
    }
    let answers = tokio::time::timeout(
        Duration::from_secs(90),
        futures::future::join_all(bodies.iter().enumerate().map(|(i, body)| {
            let base = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (http, key) = (app.http.clone(), app.api_key.clone());
            async move {
                let resp =
                    http.post(format!("{base}{EXECUTE}")).header("X-API-Key", key).json(body).send().await.unwrap();
                (resp.status(), resp.json::<Value>().await.unwrap())
            }
        })),
    )
    .await
    .expect("eight executes answered within 90 s");
    let ok = answers.iter().filter(|(s, _)| *s == StatusCode::OK).count();
    for (status, body) in answers.iter().filter(|(s, _)| *s != StatusCode::OK) {
        assert_eq!(*status, StatusCode::TOO_MANY_REQUESTS, "{body}");
        assert_eq!(body["error"]["code"], "signer_daily_budget_exceeded", "{body}");
    }
    assert!((1..8).contains(&ok), "{ok} of 8 admitted: {answers:?}");
    // What was admitted fits the budget, counted the way admission counts it.
    let spent: String = sqlx::query_scalar(
        "SELECT coalesce(sum(coalesce(t.gas_used, t.gas_limit)::numeric * l.max_fee_per_gas::numeric), 0)::text
         FROM relay_transactions t
         JOIN LATERAL (SELECT max_fee_per_gas FROM tx_attempts WHERE transaction_id = t.id ORDER BY id DESC LIMIT 1) l ON true
         WHERE t.signer = $1",
    )
    .bind(user.address().as_slice())
    .fetch_one(app.store.pool())
    .await
    .unwrap();
    assert!(spent.parse::<U256>().unwrap() <= budget, "spent {spent} of {budget}");
    // The chain agrees: exactly the admitted payments left the balance.
    assert_eq!(app.balance_of(user.address()).await, internal(10) - internal(ok as u64));
}

/// Today's spend of `signer` and of the app's key family, as admission reads it (the ledger of
/// migration 0040: totals plus deltas not rolled up yet), and as the sum over the day's rows it
/// replaced (gas used, or the limit while in flight, at the latest attempt's max fee).
pub(crate) async fn spend_both_ways(
    conn: &mut sqlx::PgConnection,
    app: &TestApp,
    signer: Address,
) -> ((String, String), (String, String)) {
    let ledger: (String, String) =
        sqlx::query_as("SELECT signer_wei::text, key_wei::text FROM admission_spend_today($1, $2, $3)")
            .bind(app.chain_id as i64)
            .bind(signer.as_slice())
            .bind(app.api_key_id)
            .fetch_one(&mut *conn)
            .await
            .unwrap();
    let rows: (String, String) = sqlx::query_as(
        "WITH today AS (
            SELECT t.chain_id, t.signer, t.api_key_id,
                   coalesce(t.gas_used, t.gas_limit, 0)::numeric * l.max_fee_per_gas::numeric AS wei
            FROM relay_transactions t
            JOIN LATERAL (SELECT max_fee_per_gas FROM tx_attempts WHERE transaction_id = coalesce(t.bundle_id, t.id)
                          ORDER BY id DESC LIMIT 1) l ON true
            WHERE t.created_at >= (date_trunc('day', now() AT TIME ZONE 'UTC') AT TIME ZONE 'UTC'))
         SELECT coalesce((SELECT sum(wei) FROM today WHERE chain_id = $1 AND signer = $2), 0)::text,
                coalesce((SELECT sum(wei) FROM today WHERE api_key_id IN (SELECT api_key_family($3))), 0)::text",
    )
    .bind(app.chain_id as i64)
    .bind(signer.as_slice())
    .bind(app.api_key_id)
    .fetch_one(&mut *conn)
    .await
    .unwrap();
    (ledger, rows)
}

/// Admission's daily spend comes from a ledger its triggers keep instead of a sum over the day's
/// rows: the two agree through queueing, mining, a fee bump, a reorg and roll-ups, for the signer
/// and for the key.
#[tokio::test]
async fn the_daily_spend_ledger_equals_the_sum_over_the_days_rows() {
    let app = spawn_app().await;
    let (user, other) = (wallet(), wallet());
    app.fund(&user, 10).await;
    app.fund(&other, 10).await;
    let mut ids = Vec::new();
    for u in [&user, &user, &other] {
        let built = app.build("/api/v1/USDC/payments/", &pay(u.address(), wallet().address(), "1")).await;
        ids.push(app.execute_ok(u, &built).await["TransactionId"].as_i64().unwrap());
    }
    let mut conn = app.store.pool().acquire().await.unwrap();
    let (ledger, rows) = spend_both_ways(&mut conn, &app, user.address()).await;
    assert_eq!(ledger, rows);
    assert_ne!(rows.0, "0", "the user's relays cost something");
    assert_ne!(rows.1, rows.0, "the key also paid for the other signer's relays");

    // A fee bump and a reorg, as the worker writes them, in a transaction rolled back at the end
    // (the worker never sees them).
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    sqlx::query(
        "INSERT INTO tx_attempts (transaction_id, sponsor_nonce, tx_hash, raw_tx, kind, max_fee_per_gas,
                                  max_priority_fee_per_gas)
         SELECT id, sponsor_nonce, decode(md5(random()::text) || md5(random()::text), 'hex'), '\\x00', 'call',
                (SELECT max(max_fee_per_gas) * 2 + 7 FROM tx_attempts WHERE transaction_id = $1), 1
         FROM relay_transactions WHERE id = $1",
    )
    .bind(ids[0])
    .execute(&mut *tx)
    .await
    .unwrap();
    let (ledger, rows) = spend_both_ways(&mut tx, &app, user.address()).await;
    assert_eq!(ledger, rows, "after a fee bump");
    sqlx::query("UPDATE relay_transactions SET gas_used = NULL WHERE id = $1")
        .bind(ids[1])
        .execute(&mut *tx)
        .await
        .unwrap();
    let (ledger, rows) = spend_both_ways(&mut tx, &app, user.address()).await;
    assert_eq!(ledger, rows, "after a reorg put a row back in flight");
    sqlx::query("SELECT admission_spend_roll_up()").execute(&mut *tx).await.unwrap();
    let (ledger, rows) = spend_both_ways(&mut tx, &app, user.address()).await;
    assert_eq!(ledger, rows, "after a roll-up");
    tx.rollback().await.unwrap();

    // Folded by the app's roll-up (or this one), then more relays on top of the totals.
    app.store.roll_up_spend().await.unwrap();
    let pending: i64 =
        sqlx::query_scalar("SELECT count(*) FROM admission_spend_deltas").fetch_one(&mut *conn).await.unwrap();
    let built = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "1")).await;
    app.execute_ok(&user, &built).await;
    let (ledger, rows) = spend_both_ways(&mut conn, &app, user.address()).await;
    assert_eq!(ledger, rows, "after roll-ups and another relay ({pending} deltas were left after one)");
}

#[tokio::test]
async fn reservations_that_expired_over_an_hour_ago_are_swept_and_live_ones_kept() {
    let app = spawn_app().await;
    let reserve = |i: u8| {
        let app = &app;
        async move { app.reserve(i, 1_000).await.id().unwrap() }
    };
    let (old, recent, live) = (reserve(1).await, reserve(2).await, reserve(3).await);
    // A process died after admitting these: one expired two hours ago, one a minute ago.
    for (id, ago) in [(old, "2 hours"), (recent, "1 minute")] {
        sqlx::query(&format!("UPDATE admission_reservations SET expires_at = now() - interval '{ago}' WHERE id = $1"))
            .bind(id)
            .execute(app.store.pool())
            .await
            .unwrap();
    }
    assert_eq!(app.store.sweep_expired_reservations().await.unwrap(), 1);
    let left: Vec<i64> = sqlx::query_scalar("SELECT id FROM admission_reservations ORDER BY id")
        .fetch_all(app.store.pool())
        .await
        .unwrap();
    assert_eq!(left, [recent, live]);
}
