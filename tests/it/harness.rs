//! `spawn_app()`: a real Anvil with freshly deployed contracts, a fresh database in a real
//! Postgres cluster, and the API served on a random port, plus typed helpers to drive them.
//!
//! One Postgres cluster per test process (nextest runs each test in its own process; `cargo
//! test` threads share it), stopped and deleted when the last test holding it finishes. Each
//! test gets its own database and its own Anvil, so tests never see each other's state.

use std::{
    net::SocketAddr,
    path::PathBuf,
    sync::{Arc, Mutex, Weak},
    time::Duration,
};

use alloy::{
    dyn_abi::TypedData,
    node_bindings::{Anvil, AnvilInstance},
    primitives::{Address, U256, address},
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::{Signer, local::PrivateKeySigner},
};
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::{
    api::{self, AppState, Deployment, Settings},
    chain::{self, MockToken, StreamPay},
    chains::{Chain, ChainParts},
    dev::postgres::{PgCluster, free_port},
    pipeline::{PipelineSettings, Sponsors},
    server,
    store::Store,
    supervisor::Supervisor,
};

/// Seconds of net outflow an account must cover (the dev deployment's value).
pub const LIQUIDATION_WINDOW: u64 = 86_400;
pub const TOKEN_DECIMALS: u8 = 6;
pub const PERMIT2: Address = address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");

/// How long a test waits for a transaction it sent to be mined before it fails (every receipt
/// wait in the suite is bounded by it; alloy's own wait has no limit).
pub const RECEIPT_TIMEOUT: Duration = Duration::from_secs(30);
/// `.mined()` on a sent transaction: its receipt, waited for at most [`RECEIPT_TIMEOUT`] (alloy's
/// own wait has no limit); the test fails naming the transaction if none comes.
pub trait Mined<N: alloy::network::Network>: Sized {
    /// Waits at most `limit`.
    fn mined_within(self, limit: Duration) -> impl std::future::Future<Output = N::ReceiptResponse>;
    fn mined(self) -> impl std::future::Future<Output = N::ReceiptResponse> {
        self.mined_within(RECEIPT_TIMEOUT)
    }
}

impl<N: alloy::network::Network> Mined<N> for alloy::providers::PendingTransactionBuilder<N> {
    async fn mined_within(self, limit: Duration) -> N::ReceiptResponse {
        let hash = *self.tx_hash();
        self.with_timeout(Some(limit))
            .get_receipt()
            .await
            .unwrap_or_else(|e| panic!("no receipt for {hash} within {limit:?}: {e}"))
    }
}

/// The bound on waiting for the receipts of a bulk setup (hundreds of mints sent at once): alloy
/// learns of each by polling block after block, which on a loaded machine takes far longer than
/// one transaction's [`RECEIPT_TIMEOUT`].
pub const BULK_RECEIPTS_TIMEOUT: Duration = Duration::from_secs(150);

/// The longest any single HTTP request of the test clients may take: above what a synchronous
/// execute under the heaviest fault test takes on a loaded 2-core machine (about a minute), below
/// nextest's 180 s limit so the failure names the request.
pub const HTTP_TIMEOUT: Duration = Duration::from_secs(150);

static CLUSTER: Mutex<Weak<PgCluster>> = Mutex::new(Weak::new());

fn cluster() -> Arc<PgCluster> {
    let mut slot = CLUSTER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(c) = slot.upgrade() {
        return c;
    }
    let dir = std::env::temp_dir().join(format!("streampay-it-pg-{}-{}", std::process::id(), rand_suffix()));
    let c = Arc::new(PgCluster::start_on_free_port(&dir, true).expect("start the test Postgres cluster"));
    *slot = Arc::downgrade(&c);
    c
}

fn rand_suffix() -> String {
    let signer = PrivateKeySigner::random();
    alloy::hex::encode(&signer.address()[..6])
}

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub struct TestApp {
    pub base: String,
    pub http: reqwest::Client,
    pub api_key: String,
    pub api_key_id: i64,
    /// The key's only (default) sponsor.
    pub sponsor: Address,
    /// Configured on the relayer but not allowed for `api_key`.
    pub other_sponsor: Address,
    pub contract: Address,
    pub token: Address,
    pub chain_id: u64,
    /// Read-only provider for checking the chain's own view functions.
    pub provider: DynProvider,
    /// Provider signing as Anvil's account #0 (the deployer), for test setup only.
    pub admin: DynProvider,
    pub store: Store,
    pub state: AppState,
    /// Runs the app's pipeline (stopped when the app is dropped; fee pricing runs in `kept`); tests start the other
    /// background tasks they need ([`TestApp::start_indexers`], [`TestApp::start_webhooks`]).
    _pipelines: Supervisor,
    /// Background tasks kept for the app's whole life ([`TestApp::keep`]).
    kept: Mutex<Vec<Supervisor>>,
    /// The Anvil node's HTTP endpoint and the test database's URL (to start `streampay serve`).
    pub rpc_url: String,
    pub db_url: String,
    /// The private key of `sponsor` (hex).
    pub sponsor_key: String,
    /// `None` once [`TestApp::stop_chain`] stopped it.
    anvil: Option<AnvilInstance>,
    _cluster: Arc<PgCluster>,
}

/// The settings `serve` runs with by default (`Config::default()`): both caches on, admission
/// on. Tests start from these (review T1), and turn a cache off only to test that path.
pub fn serve_settings() -> Settings {
    let config = streampay_relayer::config::Config::default();
    let mut s = Settings::default();
    s.meta_deadline_secs = config.meta_deadline_secs;
    s.indexer = config.indexer.clone();
    s.auth.key_cache = config.key_cache;
    s.admission = config.admission.clone();
    s.receipt_timeout = Duration::from_secs(30);
    s
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(serve_settings()).await
}

pub async fn spawn_app_with(settings: Settings) -> TestApp {
    spawn_app_on(Anvil::new(), settings, PipelineSettings::default()).await
}

/// An app whose pipeline runs with `pipeline` instead of the defaults.
pub async fn spawn_app_with_pipeline(pipeline: PipelineSettings) -> TestApp {
    spawn_app_on(Anvil::new(), serve_settings(), pipeline).await
}

/// Anvil mining a block every `secs` seconds instead of one per transaction, so several
/// transactions can be pending at once.
pub async fn spawn_app_with_block_time(secs: u64) -> TestApp {
    let anvil = Anvil::new().args(["--block-time", &secs.to_string()]);
    spawn_app_on(anvil, serve_settings(), PipelineSettings::default()).await
}

async fn spawn_app_on(anvil: Anvil, settings: Settings, pipeline: PipelineSettings) -> TestApp {
    let anvil = anvil
        .path(repo_root().join(".tools/bin/anvil"))
        .try_spawn()
        .expect("spawn anvil from .tools/bin (run scripts/bootstrap.sh first)");
    let deployer: PrivateKeySigner = anvil.keys()[0].clone().into();
    let admin = ProviderBuilder::new().wallet(deployer).connect_http(anvil.endpoint_url()).erased();
    let token = MockToken::deploy(&admin, "Mock USD Coin".into(), "mUSDC".into()).await.expect("deploy token");
    let token = *token.address();
    let sp = StreamPay::deploy(&admin, token, PERMIT2, U256::from(LIQUIDATION_WINDOW)).await.expect("deploy StreamPay");
    let contract = *sp.address();
    let chain_id = anvil.chain_id();

    let cluster = tokio::task::spawn_blocking(cluster).await.expect("cluster");
    let db = format!("test_{}", rand_suffix());
    cluster.ensure_database(&db).await.expect("create test database");
    let db_url = cluster.url(&db);
    let store = Store::connect(&db_url, 5).await.expect("connect to the test database");
    store.migrate().await.expect("migrate");

    let sponsor_signer: PrivateKeySigner = anvil.keys()[1].clone().into();
    let other_signer: PrivateKeySigner = anvil.keys()[2].clone().into();
    let sponsor = sponsor_signer.address();
    let sponsor_key = format!("0x{}", alloy::hex::encode(sponsor_signer.to_bytes()));
    let other_sponsor = other_signer.address();
    let key = store.create_api_key("test", &[sponsor], true).await.expect("create API key");

    let provider = chain::connect(&anvil.endpoint()).expect("provider");
    let state = server::build_state(
        store.clone(),
        vec![ChainParts {
            name: None,
            chain_id,
            provider: provider.clone(),
            finality_depth: pipeline.confirmations,
            deployments: vec![Deployment {
                name: "USDC".into(),
                address: contract,
                token,
                token_decimals: TOKEN_DECIMALS,
                start_block: 0,
            }],
            sponsors: Sponsors::from_signers(vec![sponsor_signer, other_signer], chain_id).with_settings(pipeline),
        }],
        settings,
    )
    .expect("state");
    // As `serve` does: the pipeline runs under a supervisor (the app's other background tasks
    // are started by the tests that need them).
    let pipelines = Supervisor::new();
    server::start_pipelines(&state, &pipelines);
    // Fee pricing too (execute and the fee endpoints read its estimate), for the app's whole life.
    let pricing = Supervisor::new();
    server::start_pricing(&state, &pricing);
    // Admission's spend roll-up too, as every `serve` runs it.
    server::start_spend_roll_up(state.store.clone(), &pricing);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
    let addr: SocketAddr = listener.local_addr().expect("addr");
    let app = api::app(state.clone());
    // With the peer address, as `serve` does: keys with a CIDR allowlist need it.
    let app = app.into_make_service_with_connect_info::<SocketAddr>();
    tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });

    TestApp {
        base: format!("http://{addr}"),
        http: reqwest::Client::builder().timeout(HTTP_TIMEOUT).build().expect("HTTP client"),
        api_key: key.key,
        api_key_id: key.id,
        sponsor,
        other_sponsor,
        contract,
        token,
        chain_id,
        provider,
        admin,
        store,
        state,
        _pipelines: pipelines,
        kept: Mutex::new(vec![pricing]),
        rpc_url: anvil.endpoint(),
        db_url,
        sponsor_key,
        anvil: Some(anvil),
        _cluster: cluster,
    }
}

/// A user wallet: a fresh key that never held native coin.
pub fn wallet() -> PrivateKeySigner {
    PrivateKeySigner::random()
}

/// `n` whole tokens in token base units.
pub fn tokens(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(TOKEN_DECIMALS))
}

/// `n` whole tokens in StreamPay's 18-decimal internal units.
pub fn internal(n: u64) -> U256 {
    U256::from(n) * U256::from(10u64).pow(U256::from(18))
}

impl TestApp {
    /// A call to queue directly in the store for the app's sponsor, by `signer` at `meta_nonce`,
    /// whose bytes are a fake (nobody must send it), without history.
    pub fn fake_call(&self, signer: Address, meta_nonce: u64) -> streampay_relayer::store::NewTransaction {
        streampay_relayer::store::NewTransaction {
            chain_id: self.chain_id,
            contract: self.contract,
            api_key_id: self.api_key_id,
            signer,
            meta_nonce,
            meta_nonce_type: streampay_relayer::chain::traits::NonceType::Account,
            call_digest: None,
            deadline: 1,
            sponsor: self.sponsor,
            calldata: alloy::primitives::Bytes::from(vec![1, 2, 3]),
            gas_limit: 100_000,
            history: None,
            reservation: streampay_relayer::store::Reservation::NONE,
        }
    }

    /// Stops the Anvil node (the API keeps running against a dead RPC).
    pub fn stop_chain(&mut self) {
        self.anvil.take();
    }

    /// Another app instance (as a second `serve` process) on the same database and chain, with
    /// its own settings, sponsors and HTTP server; answers its base URL.
    pub async fn instance_with(&self, settings: Settings) -> String {
        let anvil = self.anvil.as_ref().expect("the chain is running");
        let sponsors: Vec<PrivateKeySigner> = vec![anvil.keys()[1].clone().into(), anvil.keys()[2].clone().into()];
        let store = Store::connect(&self.db_url, 5).await.expect("connect to the test database");
        let chain = self.chain();
        let state = server::build_state(
            store,
            vec![ChainParts {
                name: None,
                chain_id: self.chain_id,
                provider: self.provider.clone(),
                finality_depth: chain.finality_depth,
                deployments: chain.deployments.clone(),
                sponsors: Sponsors::from_signers(sponsors, self.chain_id),
            }],
            settings,
        )
        .expect("state");
        let supervisor = Supervisor::new();
        server::start_pipelines(&state, &supervisor);
        server::start_pricing(&state, &supervisor);
        server::start_spend_roll_up(state.store.clone(), &supervisor);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let app = api::app(state).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move {
            // The instance's pipeline lives as long as its server.
            let _supervisor = supervisor;
            axum::serve(listener, app).await.expect("serve")
        });
        format!("http://{addr}")
    }

    /// Another app instance on the same database, reaching the chain through `rpc_url` (a proxy,
    /// say), with none of its background tasks started: the caller starts what it needs on the
    /// answered state. Answers its base URL and state.
    pub async fn instance_via(&self, rpc_url: &str, settings: Settings) -> (String, AppState) {
        let anvil = self.anvil.as_ref().expect("the chain is running");
        let sponsors: Vec<PrivateKeySigner> = vec![anvil.keys()[1].clone().into(), anvil.keys()[2].clone().into()];
        let store = Store::connect(&self.db_url, 5).await.expect("connect to the test database");
        let chain = self.chain();
        let state = server::build_state(
            store,
            vec![ChainParts {
                name: None,
                chain_id: self.chain_id,
                provider: chain::connect(rpc_url).expect("provider"),
                finality_depth: chain.finality_depth,
                deployments: chain.deployments.clone(),
                sponsors: Sponsors::from_signers(sponsors, self.chain_id),
            }],
            settings,
        )
        .expect("state");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr: SocketAddr = listener.local_addr().expect("addr");
        let app = api::app(state.clone()).into_make_service_with_connect_info::<SocketAddr>();
        tokio::spawn(async move { axum::serve(listener, app).await.expect("serve") });
        (format!("http://{addr}"), state)
    }

    /// Deposits `n` tokens for `user` with the user's own transactions (impersonated on Anvil),
    /// not through the relayer: the relayer's index does not hear of it until it next indexes.
    pub async fn deposit_directly(&self, user: Address, n: u64) {
        let _: Value = self
            .provider
            .raw_request("anvil_setBalance".into(), (user, "0xde0b6b3a7640000"))
            .await
            .expect("setBalance");
        let _: Value =
            self.provider.raw_request("anvil_impersonateAccount".into(), (user,)).await.expect("impersonate");
        self.mint(user, tokens(n)).await;
        let token = MockToken::new(self.token, &self.provider);
        token.approve(self.contract, tokens(n)).from(user).send().await.unwrap().get_receipt().await.unwrap();
        let r =
            self.streampay().deposit(tokens(n), false).from(user).send().await.unwrap().get_receipt().await.unwrap();
        assert!(r.status(), "direct deposit");
    }

    /// Waits (at most 20 s) until the background pricing has read the effective gas price of
    /// every mined transaction, so spend and cost figures are exact rather than upper bounds.
    pub async fn wait_priced(&self) {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            let left = self.store.unpriced_transactions(self.chain_id, &[], 1).await.expect("unpriced rows");
            if left.is_empty() {
                return;
            }
            assert!(tokio::time::Instant::now() < deadline, "transactions still unpriced after 20 s: {left:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// An admission reservation of `wei` for a fresh signer of the app's key, as an admitted call
    /// of digest `0xii…` leaves it (the admission's checks all pass).
    pub async fn reserve(&self, i: u8, wei: u64) -> streampay_relayer::store::Reservation {
        self.store
            .admit_and_reserve(
                self.chain_id,
                self.api_key_id,
                wallet().address(),
                self.sponsor,
                alloy::primitives::B256::repeat_byte(i),
                3600,
                alloy::primitives::U256::from(wei),
                |_| Ok::<(), ()>(()),
            )
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits (at most 10 s) for a fee estimate made after this call: one that follows every block
    /// mined so far (a row is priced as it is settled, so [`TestApp::wait_priced`] does not wait
    /// for a pricing pass).
    pub async fn wait_fees_refreshed(&self) {
        let since = std::time::Instant::now();
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        let pricing = &self.chain().pricing;
        pricing.wake();
        while pricing.estimated_at().is_none_or(|at| at <= since) {
            assert!(tokio::time::Instant::now() < deadline, "no fee estimate within 10 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Stops the app's pipeline (its workers give their sponsor leases up).
    pub async fn stop_pipelines(&self) {
        let aborted = self._pipelines.shutdown(Duration::from_secs(10)).await;
        assert!(aborted.is_empty(), "the pipeline did not stop: {aborted:?}");
    }

    /// Stops the background tasks kept for the app (its fee pricing among them), so a test can
    /// run its own in their place.
    pub async fn stop_kept(&self) {
        let kept: Vec<Supervisor> = self.kept.lock().unwrap_or_else(|e| e.into_inner()).drain(..).collect();
        for tasks in kept {
            assert!(tasks.shutdown(Duration::from_secs(10)).await.is_empty(), "a kept task did not stop");
        }
    }

    /// Keeps `tasks` running as long as the app lives.
    pub fn keep(&self, tasks: Supervisor) {
        self.kept.lock().unwrap_or_else(|e| e.into_inner()).push(tasks);
    }

    /// The app's one chain.
    pub fn chain(&self) -> &Arc<Chain> {
        &self.state.chains[0]
    }

    /// Starts one indexer per deployment, as `serve` does; they stop when the answer is dropped.
    pub fn start_indexers(&self) -> Supervisor {
        let supervisor = Supervisor::new();
        server::start_indexers(&self.state, &supervisor);
        supervisor
    }

    /// Starts the webhook dispatcher, as `serve` does; it stops when the answer is dropped.
    pub fn start_webhooks(&self) -> Supervisor {
        let supervisor = Supervisor::new();
        server::start_webhooks(&self.state, &supervisor);
        supervisor
    }

    pub fn url(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }

    async fn send(&self, req: reqwest::RequestBuilder) -> (StatusCode, Value) {
        let resp = req.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.expect("body");
        let body = serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON body ({status}): {text}"));
        (status, body)
    }

    pub async fn get(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.get(self.url(path)).header("X-API-Key", &self.api_key)).await
    }

    pub async fn get_with_key(&self, path: &str, key: Option<&str>) -> (StatusCode, Value) {
        let mut r = self.http.get(self.url(path));
        if let Some(k) = key {
            r = r.header("X-API-Key", k);
        }
        self.send(r).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> (StatusCode, Value) {
        self.send(self.http.post(self.url(path)).header("X-API-Key", &self.api_key).json(body)).await
    }

    pub async fn post_with_key(&self, path: &str, key: Option<&str>, body: &Value) -> (StatusCode, Value) {
        let mut r = self.http.post(self.url(path)).json(body);
        if let Some(k) = key {
            r = r.header("X-API-Key", k);
        }
        self.send(r).await
    }

    pub async fn post_raw(&self, path: &str, body: &str) -> (StatusCode, Value) {
        self.send(
            self.http
                .post(self.url(path))
                .header("X-API-Key", &self.api_key)
                .header("Content-Type", "application/json")
                .body(body.to_string()),
        )
        .await
    }

    pub async fn delete(&self, path: &str) -> (StatusCode, Value) {
        self.send(self.http.delete(self.url(path)).header("X-API-Key", &self.api_key)).await
    }

    /// POSTs a build request and asserts it succeeded.
    pub async fn build(&self, path: &str, body: &Value) -> Value {
        let (status, resp) = self.post(path, body).await;
        assert_eq!(status, StatusCode::OK, "build {path} failed: {resp}");
        resp
    }

    /// Builds a payment of `amount` tokens from `from` to a fresh wallet.
    pub async fn build_pay(&self, from: &PrivateKeySigner, amount: &str) -> Value {
        let body = json!({"From": from.address(), "To": wallet().address(), "Amount": amount});
        self.build("/api/v1/USDC/payments/", &body).await
    }

    /// Signs a build response's TypedData as `signer` (exactly the document served, like
    /// eth_signTypedData_v4) and the execute body to relay it.
    pub async fn signed_execute_body(&self, signer: &PrivateKeySigner, built: &Value) -> Value {
        let t = &built["Transaction"];
        let signature = sign_document(signer, &t["TypedData"]).await;
        let mut body = json!({
            "From": t["From"],
            "Signature": signature,
            "Data": t["Data"],
            "Nonce": t["Nonce"],
            "Sponsor": built["Sponsor"],
            "Deadline": t["Deadline"],
        });
        if t.get("PermitTypedData").is_some() {
            let p = &t["PermitTypedData"];
            // EIP-2612 Permit, or Permit2's PermitSingle (amount and deadline nested otherwise).
            let (value, deadline) = if p["primaryType"] == "PermitSingle" {
                (&p["message"]["details"]["amount"], &p["message"]["sigDeadline"])
            } else {
                (&p["message"]["value"], &p["message"]["deadline"])
            };
            body["Permit"] = json!({
                "Value": value,
                "Deadline": deadline,
                "Signature": sign_document(signer, p).await,
            });
        }
        body
    }

    /// Signs and executes a built meta-transaction; returns the execute response.
    pub async fn execute(&self, signer: &PrivateKeySigner, built: &Value) -> (StatusCode, Value) {
        let body = self.signed_execute_body(signer, built).await;
        self.post("/api/v1/USDC/meta/execute", &body).await
    }

    /// `POST /meta/execute` with `Prefer: respond-async` and the harness key; the raw answer.
    pub async fn execute_async(&self, body: &Value) -> reqwest::Response {
        self.http
            .post(self.url("/api/v1/USDC/meta/execute"))
            .header("X-API-Key", &self.api_key)
            .header("Prefer", "respond-async")
            .json(body)
            .send()
            .await
            .expect("request")
    }

    /// Signs and executes, asserting success.
    pub async fn execute_ok(&self, signer: &PrivateKeySigner, built: &Value) -> Value {
        let (status, resp) = self.execute(signer, built).await;
        assert_eq!(status, StatusCode::OK, "execute failed: {resp}");
        resp
    }

    // ---- chain helpers (the chain's own view functions are the source of truth in tests)

    /// Brings the Postgres index up to the chain's head, as `serve`'s indexer does in the
    /// background, so the read endpoints (which answer only from the index) see every mined block.
    pub async fn sync_index(&self) {
        use streampay_relayer::indexer::{Indexer, IndexerConfig, RpcLogSource};
        let source = Arc::new(RpcLogSource::new(self.provider.clone()));
        let ix =
            Indexer::new(source, self.store.pool().clone(), self.chain_id, self.contract, 0, IndexerConfig::default());
        // Under the deployment's lock: execute's read-your-writes catch-up may run at the same time.
        ix.sync_to_head_exclusive().await.expect("index the chain up to its head");
    }

    pub fn streampay(&self) -> StreamPay::StreamPayInstance<&DynProvider> {
        StreamPay::new(self.contract, &self.provider)
    }

    pub async fn balance_of(&self, who: Address) -> U256 {
        self.streampay().balanceOf(who).call().await.expect("balanceOf")
    }

    pub async fn token_balance(&self, who: Address) -> U256 {
        MockToken::new(self.token, &self.provider).balanceOf(who).call().await.expect("token balanceOf")
    }

    pub async fn mint(&self, to: Address, amount: U256) {
        MockToken::new(self.token, &self.admin).mint(to, amount).send().await.expect("mint").mined().await;
    }

    /// Mints to several accounts: sent one after another (the admin provider reads its nonce
    /// from the pending pool), mined together.
    pub async fn mint_many(&self, to: &[Address], amount: U256) {
        let token = MockToken::new(self.token, &self.admin);
        let mut pending = Vec::new();
        for who in to {
            pending.push(token.mint(*who, amount).send().await.expect("mint"));
        }
        for p in pending {
            p.mined_within(BULK_RECEIPTS_TIMEOUT).await;
        }
    }

    /// Mints `n` tokens to `user` and deposits them through the API (gasless, with permit).
    pub async fn fund(&self, user: &PrivateKeySigner, n: u64) {
        self.mint(user.address(), tokens(n)).await;
        let built = self
            .build("/api/v1/USDC/payments/deposit", &json!({"From": user.address(), "Amount": n.to_string()}))
            .await;
        self.execute_ok(user, &built).await;
    }

    pub async fn chain_time(&self) -> u64 {
        chain::chain_time(&self.provider).await.expect("chain time")
    }

    /// Moves the chain's clock forward and mines a block at the new time.
    pub async fn advance(&self, secs: u64) {
        let _: Value = self.provider.raw_request("evm_increaseTime".into(), (secs,)).await.expect("evm_increaseTime");
        let _: Value = self.provider.raw_request("evm_mine".into(), ()).await.expect("evm_mine");
    }

    /// Puts Uniswap Permit2 at its canonical address, as `anvil/deploy.sh` does on the dev chain
    /// (the runtime code `scripts/bootstrap.sh` extracted).
    pub async fn deploy_permit2(&self) {
        let path = repo_root().join(".tools/sol/permit2/Permit2.runtime.hex");
        let code = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("{}: {e} (run scripts/bootstrap.sh)", path.display()));
        let _: Value = self
            .provider
            .raw_request("anvil_setCode".into(), (PERMIT2, code.trim()))
            .await
            .expect("anvil_setCode Permit2");
    }

    pub async fn native_balance(&self, who: Address) -> U256 {
        self.provider.get_balance(who).await.expect("eth balance")
    }
}

pub async fn sign_document(signer: &PrivateKeySigner, doc: &Value) -> String {
    let typed: TypedData = serde_json::from_value(doc.clone()).expect("served TypedData parses as EIP-712");
    let sig = signer.sign_dynamic_typed_data(&typed).await.expect("sign");
    format!("0x{}", alloy::hex::encode(sig.as_bytes()))
}

/// Asserts an error response's status and stable code.
#[track_caller]
pub fn assert_error(resp: &(StatusCode, Value), status: StatusCode, code: &str) {
    assert_eq!(resp.0, status, "unexpected status, body: {}", resp.1);
    assert_eq!(resp.1["error"]["code"], code, "unexpected error body: {}", resp.1);
    assert!(resp.1["error"]["message"].as_str().is_some_and(|m| !m.is_empty()), "error without message: {}", resp.1);
}

/// `streampay serve` as a child process on `app`'s database and deployment, with JSON logs; every
/// line it writes (stdout and stderr) is kept in `lines`. `env` adds or overrides settings (an
/// `STREAMPAY_RPC_URL`, say: the deployments file names `app`'s Anvil). Killed when dropped.
pub struct ServeProcess {
    pub child: tokio::process::Child,
    pub base: String,
    pub lines: Arc<Mutex<Vec<String>>>,
}

impl ServeProcess {
    pub async fn start(app: &TestApp, dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        // The process sends for the app's sponsors from now on: the app's own pipeline stops
        // (giving up its sponsor leases), so every transaction goes out through the process.
        app.stop_pipelines().await;
        std::fs::create_dir_all(dir).unwrap();
        let deployments = dir.join("deployment.json");
        std::fs::write(
            &deployments,
            json!({"chainId": app.chain_id, "rpcUrl": app.rpc_url, "deployments": [{
                "name": "USDC", "address": app.contract, "token": app.token, "tokenDecimals": 6, "startBlock": 0
            }]})
            .to_string(),
        )
        .unwrap();
        let deployments = deployments.to_string_lossy().to_string();
        let chain =
            [("STREAMPAY_DEPLOYMENTS_FILE", deployments.as_str()), ("STREAMPAY_SPONSOR_KEYS", &app.sponsor_key)];
        Self::spawn(app, dir, &[&chain[..], env].concat()).await
    }

    /// `streampay serve` on `app`'s database with the configuration file `config` (TOML, written
    /// into `dir`) and `env`: the chains are the file's.
    pub async fn start_with_config(app: &TestApp, dir: &std::path::Path, config: &str, env: &[(&str, &str)]) -> Self {
        app.stop_pipelines().await;
        std::fs::create_dir_all(dir).unwrap();
        let path = dir.join("streampay.toml");
        std::fs::write(&path, config).unwrap();
        let path = path.to_string_lossy().to_string();
        Self::spawn(app, dir, &[&[("STREAMPAY_CONFIG", path.as_str())][..], env].concat()).await
    }

    async fn spawn(app: &TestApp, dir: &std::path::Path, env: &[(&str, &str)]) -> Self {
        use tokio::io::{AsyncBufReadExt, AsyncRead};
        let port = free_port().unwrap();
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_streampay"));
        cmd.args(["serve", "--log-format", "json"])
            .current_dir(dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STREAMPAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("STREAMPAY_DATABASE_URL", &app.db_url)
            .env("RUST_LOG", "info")
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .kill_on_drop(true);
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("spawn streampay serve");
        let lines = Arc::new(Mutex::new(Vec::new()));
        let outputs: [Box<dyn AsyncRead + Unpin + Send>; 2] =
            [Box::new(child.stdout.take().unwrap()), Box::new(child.stderr.take().unwrap())];
        for out in outputs {
            let sink = lines.clone();
            tokio::spawn(async move {
                let mut reader = tokio::io::BufReader::new(out).lines();
                while let Ok(Some(line)) = reader.next_line().await {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
        let base = format!("http://127.0.0.1:{port}");
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        while app.http.get(format!("{base}/health")).send().await.is_err() {
            assert!(
                tokio::time::Instant::now() < deadline,
                "streampay serve did not come up: {:?}",
                lines.lock().unwrap_or_else(|e| e.into_inner())
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Self { child, base, lines }
    }

    /// Every line so far.
    pub fn lines(&self) -> Vec<String> {
        self.lines.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }
}
