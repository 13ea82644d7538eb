//! `GET /api/v1/{contract}/recipients/resolve?identifier=`.

use alloy::primitives::Address;
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::indexer::{Indexer, IndexerConfig, RpcLogSource};

use crate::harness::{TestApp, assert_error, spawn_app, wallet};

async fn resolve(app: &TestApp, identifier: &str) -> Value {
    let (status, body) =
        app.get(&format!("/api/v1/USDC/recipients/resolve?identifier={}", urlencode(identifier))).await;
    assert_eq!(status, StatusCode::OK, "{identifier}: {body}");
    body
}

fn urlencode(s: &str) -> String {
    s.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}

/// `s` with the case of its last hex letter flipped: a one-character checksum typo.
fn flip_last_letter(s: &str) -> String {
    let i = s.rfind(|c: char| matches!(c, 'a'..='f' | 'A'..='F')).expect("a checksummed address with a letter");
    let mut out = s.to_string();
    let c = s[i..].chars().next().unwrap();
    let flipped = if c.is_ascii_uppercase() { c.to_ascii_lowercase() } else { c.to_ascii_uppercase() };
    out.replace_range(i..i + 1, &flipped.to_string());
    out
}

fn lower(a: Address) -> String {
    format!("{a:#x}")
}

#[tokio::test]
async fn resolve_reports_validity_checksum_balance_streams_and_code() {
    let app = spawn_app().await;
    let (user, author, stranger) = (wallet(), wallet(), wallet());

    // Malformed: 200 with the reason, so a form can show it.
    for bad in ["0x12", "hello", "0xZZ00000000000000000000000000000000000000"] {
        let r = resolve(&app, bad).await;
        assert_eq!(r["Valid"], false, "{bad}");
        assert!(r["Reason"].as_str().unwrap().contains("not a valid address"), "{r}");
        assert_eq!(r["Address"], Value::Null);
    }
    // A typo in a checksummed address is caught.
    let good = stranger.address().to_checksum(None);
    let typo = flip_last_letter(&good);
    let r = resolve(&app, &typo).await;
    assert_eq!(r["Valid"], false, "{typo}: {r}");
    assert!(r["Reason"].as_str().unwrap().contains("checksum"), "{r}");

    // An unknown, well-formed address: valid, its checksum form, nothing known.
    let r = resolve(&app, &lower(stranger.address())).await;
    assert_eq!(r["Valid"], true);
    assert_eq!(r["Address"], json!(good));
    assert_eq!(r["ChecksumMatches"], false, "lowercase carries no checksum");
    assert_eq!(r["Known"], false);
    assert_eq!(r["HasBalance"], false);
    assert_eq!(r["HasStreams"], false);
    assert_eq!(r["IsContract"], false);
    assert_eq!(r["Source"], "chain", "no index checkpoint yet");
    assert_eq!(resolve(&app, &good).await["ChecksumMatches"], true);

    // Zero and the contract itself cannot receive; the token is a contract.
    let r = resolve(&app, &lower(Address::ZERO)).await;
    assert_eq!(r["Valid"], false);
    let r = resolve(&app, &app.contract.to_checksum(None)).await;
    assert_eq!(r["Valid"], false);
    assert_eq!(r["IsContract"], true);
    let r = resolve(&app, &app.token.to_checksum(None)).await;
    assert_eq!(r["Valid"], true);
    assert_eq!(r["IsContract"], true);

    // A funded subscriber and its author, from the chain's views…
    app.fund(&user, 40).await;
    let built = app
        .build(
            "/api/v1/USDC/subscriptions",
            &json!({"from": user.address(), "author": author.address(), "subscription_rate": "30"}),
        )
        .await;
    app.execute_ok(&user, &built).await;
    let r = resolve(&app, &lower(user.address())).await;
    assert_eq!(
        (r["Known"].clone(), r["HasBalance"].clone(), r["HasStreams"].clone()),
        (json!(true), json!(true), json!(true)),
        "{r}"
    );
    // The relayed calls were indexed before execute answered (read-your-writes).
    assert_eq!(r["Source"], "index");
    let r = resolve(&app, &lower(author.address())).await;
    assert_eq!(r["HasStreams"], true, "{r}");
    assert_eq!(r["Known"], true);

    // …and from the index once it has the deployment.
    let indexer = Indexer::new(
        std::sync::Arc::new(RpcLogSource::new(app.provider.clone())),
        app.store.pool().clone(),
        app.chain_id,
        app.contract,
        0,
        IndexerConfig::default(),
    );
    indexer.sync_to_head().await.unwrap();
    let r = resolve(&app, &lower(author.address())).await;
    assert_eq!(r["Source"], "index");
    assert_eq!(r["HasStreams"], true, "{r}");
    let r = resolve(&app, &lower(user.address())).await;
    assert_eq!(r["Source"], "index");
    assert_eq!(r["HasBalance"], true);
    assert_eq!(
        r["BalanceRaw"],
        json!(app.balance_of(user.address()).await.to_string()),
        "the index at the chain's head"
    );
    let r = resolve(&app, &lower(stranger.address())).await;
    assert_eq!((r["Source"].clone(), r["Known"].clone()), (json!("index"), json!(false)));

    assert_error(&app.get("/api/v1/USDC/recipients/resolve").await, StatusCode::BAD_REQUEST, "missing_field");
    assert_error(
        &app.get("/api/v1/USDC/recipients/resolve?identifier=").await,
        StatusCode::BAD_REQUEST,
        "missing_field",
    );
    assert_error(
        &app.get(&format!("/api/v1/DAI/recipients/resolve?identifier={good}")).await,
        StatusCode::NOT_FOUND,
        "unknown_contract",
    );
    assert_error(
        &app.get_with_key(&format!("/api/v1/USDC/recipients/resolve?identifier={good}"), None).await,
        StatusCode::UNAUTHORIZED,
        "missing_api_key",
    );
}
