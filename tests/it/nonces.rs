//! Issue 12, nonces nobody can block: builds reserve nothing, built calls use unique nonces by
//! default, account nonces on request, and no request can touch another caller's built call.

use std::time::Duration;

use alloy::primitives::{Address, U256};
use rand::seq::SliceRandom;
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::harness::{TestApp, assert_error, internal, spawn_app, wallet};

fn pay(from: Address, to: Address, amount: &str) -> Value {
    json!({"From": from, "To": to, "Amount": amount})
}

fn pay_account(from: Address, to: Address, amount: &str) -> Value {
    json!({"From": from, "To": to, "Amount": amount, "NonceType": "account"})
}

/// Rows the relayer stores about `who`'s nonces.
async fn nonce_rows(app: &TestApp, who: Address) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM meta_nonces WHERE signer = $1")
        .bind(who.as_slice())
        .fetch_one(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn builds_use_unique_nonces_by_default_and_account_nonces_on_request() {
    let app = spawn_app().await;
    let user = wallet();
    let a = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "1")).await;
    let b = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "1")).await;
    assert_eq!(a["Transaction"]["NonceType"], "unique");
    assert_ne!(a["Transaction"]["Nonce"], b["Transaction"]["Nonce"], "two builds, two unique nonces");
    // The traits word carries nonce type 2 and the nonce, and fits a JSON-safe integer.
    let traits: U256 = a["Transaction"]["Traits"].as_str().unwrap().parse().unwrap();
    assert_eq!((traits >> 254usize).to::<u8>(), 2);
    let nonce = a["Transaction"]["Nonce"].as_u64().unwrap();
    assert!(nonce < 1 << 53);
    assert_eq!(traits & U256::from(u128::MAX), U256::from(nonce));

    // Account nonces when asked: the current one, twice (building reserves nothing), or a chosen one.
    let c = app.build("/api/v1/USDC/payments/", &pay_account(user.address(), wallet().address(), "1")).await;
    let d = app.build("/api/v1/USDC/payments/", &pay_account(user.address(), wallet().address(), "1")).await;
    assert_eq!(
        (c["Transaction"]["NonceType"].clone(), c["Transaction"]["Nonce"].clone()),
        (json!("account"), json!(0))
    );
    assert_eq!(d["Transaction"]["Nonce"], 0);
    let mut chosen = pay_account(user.address(), wallet().address(), "1");
    chosen["Nonce"] = json!(3);
    assert_eq!(app.build("/api/v1/USDC/payments/", &chosen).await["Transaction"]["Nonce"], 3);
    assert_eq!(nonce_rows(&app, user.address()).await, 0, "builds store nothing");

    // Typed errors for the new request fields.
    let mut bad = pay(user.address(), wallet().address(), "1");
    bad["NonceType"] = json!("selector");
    assert_error(&app.post("/api/v1/USDC/payments/", &bad).await, StatusCode::BAD_REQUEST, "invalid_nonce_type");
    let mut bad = pay(user.address(), wallet().address(), "1");
    bad["Nonce"] = json!(7);
    assert_error(&app.post("/api/v1/USDC/payments/", &bad).await, StatusCode::UNPROCESSABLE_ENTITY, "invalid_nonce");
}

#[tokio::test]
async fn a_third_party_key_building_for_a_victim_does_not_block_the_victims_own_call() {
    let app = spawn_app().await;
    let victim = wallet();
    app.fund(&victim, 10).await;
    let attacker = app.store.create_api_key("another tenant", &[app.sponsor], true).await.unwrap();
    // The other tenant builds many calls as the victim, of both nonce types, and never executes.
    for body in [
        pay(victim.address(), wallet().address(), "1"),
        pay_account(victim.address(), wallet().address(), "1"),
        pay_account(victim.address(), wallet().address(), "2"),
    ] {
        for _ in 0..3 {
            let (status, resp) = app.post_with_key("/api/v1/USDC/payments/", Some(&attacker.key), &body).await;
            assert_eq!(status, StatusCode::OK, "{resp}");
        }
    }
    // The victim's own calls, of both types, still go through at once.
    let own = app.build("/api/v1/USDC/payments/", &pay(victim.address(), wallet().address(), "1")).await;
    app.execute_ok(&victim, &own).await;
    let own = app.build("/api/v1/USDC/payments/", &pay_account(victim.address(), wallet().address(), "1")).await;
    assert_eq!(own["Transaction"]["Nonce"], 0, "the other tenant's builds reserved nothing");
    app.execute_ok(&victim, &own).await;
    assert_eq!(app.balance_of(victim.address()).await, internal(8));
}

#[tokio::test]
async fn an_abandoned_build_blocks_nothing() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    // The wallet prompt was closed: these are never signed.
    let _abandoned = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "1")).await;
    let _abandoned = app.build("/api/v1/USDC/payments/", &pay_account(user.address(), wallet().address(), "1")).await;
    let next = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "2")).await;
    app.execute_ok(&user, &next).await;
    let ordered = app.build("/api/v1/USDC/payments/", &pay_account(user.address(), wallet().address(), "3")).await;
    app.execute_ok(&user, &ordered).await;
    assert_eq!(app.balance_of(user.address()).await, internal(5));
    assert_eq!(
        app.streampay().bySigAccountNonces(user.address()).call().await.unwrap(),
        U256::from(1),
        "one ordered call"
    );
    // An account nonce below the current one cannot be built.
    let mut stale = pay_account(user.address(), wallet().address(), "1");
    stale["Nonce"] = json!(0);
    assert_error(&app.post("/api/v1/USDC/payments/", &stale).await, StatusCode::CONFLICT, "nonce_already_used");
}

#[tokio::test]
async fn fifty_calls_built_in_parallel_and_executed_in_random_order_all_succeed() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 100).await;
    let receivers: Vec<Address> = (0..50).map(|_| wallet().address()).collect();
    let requests: Vec<Value> = receivers.iter().map(|to| pay(user.address(), *to, "1")).collect();
    let builds = futures::future::join_all(requests.iter().map(|r| app.build("/api/v1/USDC/payments/", r))).await;
    let mut bodies = futures::future::join_all(builds.iter().map(|b| app.signed_execute_body(&user, b))).await;
    bodies.shuffle(&mut rand::rng());
    let answers = tokio::time::timeout(
        Duration::from_secs(120),
        futures::future::join_all(bodies.iter().map(|b| app.post("/api/v1/USDC/meta/execute", b))),
    )
    .await
    .expect("50 executes answered within 120 s");
    for (status, body) in &answers {
        assert_eq!(*status, StatusCode::OK, "{body}");
    }
    assert_eq!(app.balance_of(user.address()).await, internal(50));
    for to in &receivers {
        assert_eq!(app.balance_of(*to).await, internal(1));
    }
}

#[tokio::test]
async fn a_bad_signature_execute_cannot_touch_another_callers_call() {
    let app = spawn_app().await;
    let victim = wallet();
    let attacker = wallet();
    app.fund(&victim, 10).await;
    let attacker_key = app.store.create_api_key("another tenant", &[app.sponsor], true).await.unwrap();
    for build in
        [pay(victim.address(), wallet().address(), "1"), pay_account(victim.address(), wallet().address(), "1")]
    {
        let built = app.build("/api/v1/USDC/payments/", &build).await;
        let rows_before = nonce_rows(&app, victim.address()).await;
        // The same call, signed by someone else, with and without the nonce type.
        let mut forged = app.signed_execute_body(&attacker, &built).await;
        forged["From"] = json!(victim.address());
        for nonce_type in [None, Some("unique"), Some("account")] {
            if let Some(t) = nonce_type {
                forged["NonceType"] = json!(t);
            }
            let resp = app.post_with_key("/api/v1/USDC/meta/execute", Some(&attacker_key.key), &forged).await;
            assert_error(&resp, StatusCode::UNPROCESSABLE_ENTITY, "signature_mismatch");
        }
        assert_eq!(nonce_rows(&app, victim.address()).await, rows_before, "a refused execute stores nothing");
        // Another build for the victim does not take the built call's nonce away either.
        let _other = app.post_with_key("/api/v1/USDC/payments/", Some(&attacker_key.key), &build).await;
        app.execute_ok(&victim, &built).await;
    }
    assert_eq!(app.balance_of(victim.address()).await, internal(8));
}

#[tokio::test]
async fn a_used_unique_nonce_is_409_nonce_already_used() {
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 5).await;
    let built = app.build("/api/v1/USDC/payments/", &pay(user.address(), wallet().address(), "1")).await;
    let body = app.signed_execute_body(&user, &built).await;
    let (status, resp) = app.post("/api/v1/USDC/meta/execute", &body).await;
    assert_eq!(status, StatusCode::OK, "{resp}");
    assert_error(&app.post("/api/v1/USDC/meta/execute", &body).await, StatusCode::CONFLICT, "nonce_already_used");
    assert_eq!(app.balance_of(user.address()).await, internal(4), "executed once");
}

/// `(nonce type, nonce, status)` of every row the relayer keeps about `who`'s nonces.
async fn nonce_table(app: &TestApp, who: Address) -> Vec<(i16, i64, String)> {
    sqlx::query_as("SELECT nonce_type, nonce, status FROM meta_nonces WHERE signer = $1 ORDER BY nonce_type, nonce")
        .bind(who.as_slice())
        .fetch_all(app.store.pool())
        .await
        .unwrap()
}

#[tokio::test]
async fn pruning_drops_old_settled_nonces_and_never_changes_the_nonce_answer() {
    use streampay_relayer::{
        chain::traits::NonceType,
        store::{NonceScope, NonceStatus},
    };
    let app = spawn_app().await;
    let user = wallet();
    app.fund(&user, 10).await;
    for _ in 0..2 {
        let built = app.build("/api/v1/USDC/payments/", &pay_account(user.address(), wallet().address(), "1")).await;
        app.execute_ok(&user, &built).await;
    }
    // A claim in flight (account nonce 2) and a failed one (7).
    let scope = NonceScope {
        chain_id: app.chain_id,
        contract: app.contract,
        signer: user.address(),
        nonce_type: NonceType::Account,
    };
    let deadline = app.chain_time().await + 3600;
    app.store.claim_nonce(scope, 2, deadline).await.unwrap();
    app.store.claim_nonce(scope, 7, deadline).await.unwrap();
    app.store.finish_nonce(scope, 7, NonceStatus::Failed).await.unwrap();
    let path = format!("/api/v1/USDC/meta/nonce/{}", user.address());
    let (status, before) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{before}");
    assert_eq!((before["Nonce"].clone(), before["ChainNonce"].clone()), (json!(3), json!(2)), "{before}");
    let rows = nonce_table(&app, user.address()).await;
    let unique: Vec<_> = rows.iter().filter(|r| r.0 == 2).cloned().collect();
    assert_eq!(unique.len(), 1, "the deposit's unique nonce: {rows:?}");

    // Nothing is old enough yet.
    let week = Duration::from_secs(7 * 86_400);
    assert_eq!(app.store.prune_meta_nonces(week).await.unwrap(), 0);
    // A week and a day later: settled rows go, except each type's highest mined nonce; the claim
    // in flight stays.
    sqlx::query("UPDATE meta_nonces SET updated_at = now() - interval '8 days'")
        .execute(app.store.pool())
        .await
        .unwrap();
    assert_eq!(app.store.prune_meta_nonces(week).await.unwrap(), 2);
    let mut expected = vec![(0, 1, "mined".to_string()), (0, 2, "submitted".to_string())];
    expected.extend(unique);
    assert_eq!(nonce_table(&app, user.address()).await, expected);
    let (status, after) = app.get(&path).await;
    assert_eq!(status, StatusCode::OK, "{after}");
    assert_eq!(after, before, "pruning changed the nonce answer");
    assert_eq!(app.store.prune_meta_nonces(week).await.unwrap(), 0, "pruning is idempotent");
}
