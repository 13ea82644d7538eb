//! One relayer process serving two chains (issue 11): two Anvils with different chain ids, each
//! with its own StreamPay deployment, served by one `AppState` over one database. Every answer
//! must be the right chain's: balances equal each chain's own `balanceOf`, calls are sent by
//! each chain's pipeline and signed for its chain id, and a signature made for one chain is
//! refused on the other.

use std::{net::SocketAddr, time::Duration};

use alloy::{
    node_bindings::{Anvil, AnvilInstance},
    primitives::{Address, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::{
    api::{self, Deployment},
    chain::{self, MockToken, StreamPay},
    chains::ChainParts,
    pipeline::{PipelineSettings, Sponsors},
    server,
    supervisor::Supervisor,
};

use crate::harness::{
    HTTP_TIMEOUT, LIQUIDATION_WINDOW, Mined, PERMIT2, TOKEN_DECIMALS, internal, repo_root, serve_settings, spawn_app,
    tokens, wallet,
};

/// A second chain: its own Anvil (chain id 31_338), token and StreamPay deployment.
struct OtherChain {
    anvil: AnvilInstance,
    provider: DynProvider,
    admin: DynProvider,
    contract: Address,
    token: Address,
}

impl OtherChain {
    async fn start(chain_id: u64) -> Self {
        let anvil = Anvil::new()
            .chain_id(chain_id)
            .path(repo_root().join(".tools/bin/anvil"))
            .try_spawn()
            .expect("spawn a second anvil");
        let deployer: PrivateKeySigner = anvil.keys()[0].clone().into();
        let admin = ProviderBuilder::new().wallet(deployer).connect_http(anvil.endpoint_url()).erased();
        let token =
            *MockToken::deploy(&admin, "Mock Euro".into(), "mEUR".into()).await.expect("deploy token").address();
        let contract = *StreamPay::deploy(&admin, token, PERMIT2, U256::from(LIQUIDATION_WINDOW))
            .await
            .expect("deploy StreamPay")
            .address();
        let provider = chain::connect(&anvil.endpoint()).expect("provider");
        Self { anvil, provider, admin, contract, token }
    }
}

async fn call(req: reqwest::RequestBuilder) -> (StatusCode, Value) {
    let resp = req.send().await.expect("request");
    let status = resp.status();
    let text = resp.text().await.expect("body");
    (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON ({status}): {text}")))
}

#[tokio::test]
async fn one_process_serves_two_chains_each_with_its_own_deployments_sponsors_and_index() {
    // Chain A: the harness's (Anvil's default chain id), deployment "USDC".
    let a = spawn_app().await;
    // Chain B: another Anvil with another chain id, deployment "EURC".
    let b = OtherChain::start(31_338).await;
    assert_ne!(a.chain_id, 31_338);

    // One process: both chains over the harness's database, as `serve` builds them. The sponsor
    // is Anvil's account #1 on both chains: the same address, two nonce sequences.
    let sponsor_a: PrivateKeySigner = a.sponsor_key.parse().unwrap();
    let sponsor_b: PrivateKeySigner = b.anvil.keys()[1].clone().into();
    assert_eq!(sponsor_a.address(), sponsor_b.address());
    let deployment = |name: &str, address, token| Deployment {
        name: name.into(),
        address,
        token,
        token_decimals: TOKEN_DECIMALS,
        start_block: 0,
    };
    // Its own pool, sized as `serve`'s default: each chain's indexer holds a connection for its
    // lock, and each NOTIFY listener one.
    let store = streampay_relayer::store::Store::connect(&a.db_url, 10).await.unwrap();
    let state = server::build_state(
        store,
        vec![
            ChainParts {
                name: Some("alpha".into()),
                chain_id: a.chain_id,
                provider: a.provider.clone(),
                finality_depth: PipelineSettings::default().confirmations,
                deployments: vec![deployment("USDC", a.contract, a.token)],
                sponsors: Sponsors::from_signers(vec![sponsor_a.clone()], a.chain_id),
            },
            ChainParts {
                name: Some("beta".into()),
                chain_id: 31_338,
                provider: b.provider.clone(),
                finality_depth: 3,
                deployments: vec![deployment("EURC", b.contract, b.token)],
                sponsors: Sponsors::from_signers(vec![sponsor_b], 31_338),
            },
        ],
        serve_settings(),
    )
    .expect("two chains");
    let supervisor = Supervisor::new();
    server::start_pipelines(&state, &supervisor);
    server::start_pricing(&state, &supervisor);
    server::start_indexers(&state, &supervisor);
    assert_eq!(supervisor.running(), vec![("pipeline", 2), ("pricing", 2), ("indexer", 2)]);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr: SocketAddr = listener.local_addr().unwrap();
    let app = api::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    let base = format!("http://{addr}");
    let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build().unwrap();
    let key = a.store.create_api_key("two chains", &[sponsor_a.address()], true).await.unwrap().key;
    let get = |path: &str| http.get(format!("{base}{path}")).header("X-API-Key", &key);
    let post = |path: &str, body: &Value| http.post(format!("{base}{path}")).header("X-API-Key", &key).json(body);

    // Discovery names each deployment with its chain.
    let (status, contracts) = call(get("/api/v1/contracts")).await;
    assert_eq!(status, StatusCode::OK, "{contracts}");
    assert_eq!(
        contracts,
        json!([
            {"Name": "USDC", "Address": a.contract.to_checksum(None), "ChainId": a.chain_id},
            {"Name": "EURC", "Address": b.contract.to_checksum(None), "ChainId": 31_338},
        ])
    );

    // A gasless deposit on each chain, through the same API and key.
    let user = wallet();
    a.mint(user.address(), tokens(5)).await;
    MockToken::new(b.token, &b.admin).mint(user.address(), tokens(7)).send().await.unwrap().mined().await;
    let mut deposits = Vec::new();
    for (name, chain_id, n) in [("USDC", a.chain_id, 5u64), ("EURC", 31_338u64, 7)] {
        let (status, built) = call(post(
            &format!("/api/v1/{name}/payments/deposit"),
            &json!({"From": user.address(), "Amount": n.to_string()}),
        ))
        .await;
        assert_eq!(status, StatusCode::OK, "{built}");
        assert_eq!(built["Transaction"]["ChainId"], json!(chain_id), "{built}");
        assert_eq!(built["Transaction"]["TypedData"]["domain"]["chainId"], json!(chain_id), "{built}");
        let body = a.signed_execute_body(&user, &built).await;
        if name == "EURC" {
            // Signed for chain B: chain A's deployment must refuse it.
            let (status, wrong) = call(post("/api/v1/USDC/meta/execute", &body)).await;
            assert!(status.is_client_error(), "a chain-B signature relayed on chain A: {status} {wrong}");
        }
        let (status, done) = call(post(&format!("/api/v1/{name}/meta/execute"), &body)).await;
        assert_eq!(status, StatusCode::OK, "{done}");
        deposits.push((name, chain_id, n, done));
    }

    // Each chain's own view functions agree with the API right after the writes.
    let on_a = StreamPay::new(a.contract, &a.provider).balanceOf(user.address()).call().await.unwrap();
    let on_b = StreamPay::new(b.contract, &b.provider).balanceOf(user.address()).call().await.unwrap();
    assert_eq!((on_a, on_b), (internal(5), internal(7)));
    for (name, chain_id, n, done) in &deposits {
        let (status, balance) = call(get(&format!("/api/v1/{name}/payments/balance/{}", user.address()))).await;
        assert_eq!(status, StatusCode::OK, "{balance}");
        assert_eq!(balance["BalanceRaw"], json!(internal(*n).to_string()), "{name}: {balance}");
        // The transaction is recorded on its chain, sent by that chain's pipeline.
        let hash: alloy::primitives::B256 = done["TransactionHash"].as_str().unwrap().parse().unwrap();
        let provider = if *chain_id == a.chain_id { &a.provider } else { &b.provider };
        let receipt = provider.get_transaction_receipt(hash).await.unwrap().expect("mined on its own chain");
        assert!(receipt.status());
        assert_eq!(receipt.from, sponsor_a.address());
        let (status, t) = call(get(&format!("/api/v1/transactions/{}", done["TransactionId"]))).await;
        assert_eq!(status, StatusCode::OK, "{t}");
        assert_eq!((t["ChainId"].clone(), t["Contract"].clone()), (json!(chain_id), json!(name)), "{t}");
    }
    // Each chain's sponsor nonce advanced on its own chain only: one relayed call each.
    assert_eq!(a.provider.get_transaction_count(sponsor_a.address()).await.unwrap(), 1);
    assert_eq!(b.provider.get_transaction_count(sponsor_a.address()).await.unwrap(), 1);

    // /health and GET / show both chains.
    let (_, health) = call(http.get(format!("{base}/health"))).await;
    let chains: Vec<(u64, bool)> = health["Chains"]
        .as_array()
        .expect("chains in /health")
        .iter()
        .map(|c| (c["ChainId"].as_u64().unwrap(), c["Rpc"]["Ok"].as_bool().unwrap()))
        .collect();
    assert_eq!(chains, vec![(a.chain_id, true), (31_338, true)], "{health}");
    let (_, root) = call(http.get(format!("{base}/"))).await;
    assert_eq!(root["Contracts"]["EURC"]["ChainId"], json!(31_338), "{root}");
    assert_eq!(root["Chains"][1]["FinalityDepth"], json!(3), "{root}");

    // Chain B's node stops: the relayer is degraded, not down, and chain A still relays.
    drop(b.anvil);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let (status, health) = call(http.get(format!("{base}/health"))).await;
        if health["Status"] == "degraded" {
            assert_eq!(status, StatusCode::OK);
            assert_eq!(health["Chains"][1]["Rpc"]["Ok"], json!(false), "{health}");
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "/health never saw chain B down: {health}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    a.mint(user.address(), tokens(1)).await;
    let (status, built) =
        call(post("/api/v1/USDC/payments/deposit", &json!({"From": user.address(), "Amount": "1"}))).await;
    assert_eq!(status, StatusCode::OK, "{built}");
    let body = a.signed_execute_body(&user, &built).await;
    let (status, done) = call(post("/api/v1/USDC/meta/execute", &body)).await;
    assert_eq!(status, StatusCode::OK, "chain A relays while chain B is down: {done}");
    let (_, balance) = call(get(&format!("/api/v1/USDC/payments/balance/{}", user.address()))).await;
    assert_eq!(balance["BalanceRaw"], json!(internal(6).to_string()), "{balance}");
    let aborted = supervisor.shutdown(Duration::from_secs(10)).await;
    assert!(aborted.is_empty(), "stages that did not stop: {aborted:?}");
}

#[tokio::test]
async fn streampay_serve_with_two_chains_in_its_configuration_relays_on_both() {
    let a = spawn_app().await;
    let b = OtherChain::start(31_339).await;
    let dir = std::env::temp_dir().join(format!("streampay-two-chains-{}", wallet().address()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = |name: &str, chain_id: u64, rpc: &str, contract: Address, token: Address| {
        let path = dir.join(format!("{name}.json"));
        let deployment = json!({"chainId": chain_id, "rpcUrl": rpc, "deployments": [{
            "name": name, "address": contract, "token": token, "tokenDecimals": TOKEN_DECIMALS, "startBlock": 0
        }]});
        std::fs::write(&path, deployment.to_string()).unwrap();
        path.to_string_lossy().to_string()
    };
    let (file_a, file_b) = (
        file("USDC", a.chain_id, &a.rpc_url, a.contract, a.token),
        file("EURC", 31_339, &b.anvil.endpoint(), b.contract, b.token),
    );
    // Chain B's node is given twice, a dead URL first: the relayer fails over to the live one.
    let dead = format!("http://127.0.0.1:{}", streampay_relayer::dev::postgres::free_port().unwrap());
    let config = format!(
        "[[chains]]\nname = \"alpha\"\ndeployments_file = {file_a:?}\nsponsor_keys = [{key:?}]\n\n\
         [[chains]]\nname = \"beta\"\ndeployments_file = {file_b:?}\nrpc_urls = [{dead:?}, {live:?}]\n\
         rpc_timeout_ms = 2000\nfinality_depth = 2\nsponsor_keys = [{key:?}]\n",
        key = a.sponsor_key,
        live = b.anvil.endpoint(),
    );
    let serve = crate::harness::ServeProcess::start_with_config(&a, &dir, &config, &[]).await;
    let http = reqwest::Client::builder().timeout(HTTP_TIMEOUT).build().unwrap();
    let key = a.store.create_api_key("two chains", &[a.sponsor], true).await.unwrap().key;
    let get = |path: &str| http.get(format!("{}{path}", serve.base)).header("X-API-Key", &key);
    let post =
        |path: &str, body: &Value| http.post(format!("{}{path}", serve.base)).header("X-API-Key", &key).json(body);

    let (status, contracts) = call(get("/api/v1/contracts")).await;
    assert_eq!(status, StatusCode::OK, "{contracts}");
    let chains: Vec<(String, u64)> = contracts
        .as_array()
        .unwrap()
        .iter()
        .map(|c| (c["Name"].as_str().unwrap().to_string(), c["ChainId"].as_u64().unwrap()))
        .collect();
    assert_eq!(chains, vec![("USDC".to_string(), a.chain_id), ("EURC".to_string(), 31_339)]);
    let (_, root) = call(http.get(format!("{}/", serve.base))).await;
    assert_eq!(root["Chains"][1], json!({"Name": "beta", "ChainId": 31_339, "FinalityDepth": 2}), "{root}");

    // A gasless deposit on chain B through the process.
    let user = wallet();
    MockToken::new(b.token, &b.admin).mint(user.address(), tokens(4)).send().await.unwrap().mined().await;
    let (status, built) =
        call(post("/api/v1/EURC/payments/deposit", &json!({"From": user.address(), "Amount": "4"}))).await;
    assert_eq!(status, StatusCode::OK, "{built}");
    let body = a.signed_execute_body(&user, &built).await;
    let (status, done) = call(post("/api/v1/EURC/meta/execute", &body)).await;
    assert_eq!(status, StatusCode::OK, "{done}");
    let on_b = StreamPay::new(b.contract, &b.provider).balanceOf(user.address()).call().await.unwrap();
    assert_eq!(on_b, internal(4));
    let (_, balance) = call(get(&format!("/api/v1/EURC/payments/balance/{}", user.address()))).await;
    assert_eq!(balance["BalanceRaw"], json!(internal(4).to_string()), "{balance}");

    // Both chains healthy in the process's /health.
    let (status, health) = call(http.get(format!("{}/health", serve.base))).await;
    assert_eq!(status, StatusCode::OK, "{health}");
    let names: Vec<&str> = health["Chains"].as_array().unwrap().iter().map(|c| c["Name"].as_str().unwrap()).collect();
    assert_eq!(names, ["alpha", "beta"], "{health}");
    assert!(health["Chains"].as_array().unwrap().iter().all(|c| c["Rpc"]["Ok"] == true), "{health}");
    // Nothing the process logged names either chain's node URL with its port.
    let lines = serve.lines();
    assert!(!lines.iter().any(|l| l.contains(&dead)), "a node URL reached the log");
}
