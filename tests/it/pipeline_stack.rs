//! A stack for pipeline and fault tests: one Anvil (any flags), one Postgres cluster and
//! database, and any number of relayer replicas on them, in-process (`replica`) or as real
//! `streampay serve` child processes (`spawn_serve`), so a replica can be SIGKILLed.

use std::{
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::Arc,
    time::Duration,
};

use alloy::{
    node_bindings::{Anvil, AnvilInstance},
    primitives::{Address, U256, address},
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::local::PrivateKeySigner,
};
use futures::StreamExt;
use reqwest::StatusCode;
use serde_json::{Value, json};
use streampay_relayer::{
    api::{self, Deployment, Settings},
    chain::{self, MockToken, StreamPay},
    chains::ChainParts,
    dev::postgres::{PgCluster, free_port},
    pipeline::{PipelineSettings, Sponsors},
    server,
    store::Store,
    supervisor::Supervisor,
};

use crate::harness::Mined;
use crate::harness::{sign_document, tokens};

const PERMIT2: Address = address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");

/// Each in-process replica's `database.max_connections`: bursts of hundreds of executes per
/// replica queue for these.
const REPLICA_DB_CONNECTIONS: u32 = 30;

pub struct Stack {
    /// `None` only while [`Stack::restart_anvil`] has it down.
    anvil: std::sync::Mutex<Option<AnvilInstance>>,
    anvil_args: Vec<String>,
    anvil_port: u16,
    anvil_url: String,
    pub chain_id: u64,
    pub contract: Address,
    pub token: Address,
    pub provider: DynProvider,
    pub admin: DynProvider,
    pub store: Store,
    pub db_url: String,
    pub api_key: String,
    pub sponsor_signer: PrivateKeySigner,
    /// Anvil's account #0: deploys and mints.
    pub deployer: Address,
    pub http: reqwest::Client,
    dir: PathBuf,
    cluster: Arc<PgCluster>,
}

pub struct Replica {
    pub base: String,
}

/// A relayer process started from the built `streampay` binary.
pub struct ServeProcess {
    pub child: Child,
    pub base: String,
}

impl ServeProcess {
    pub fn kill(&mut self) {
        // SIGKILL: no shutdown code runs, exactly like a crash.
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ServeProcess {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Settings for tests: fast polling, short leases.
pub fn fast_settings() -> PipelineSettings {
    PipelineSettings {
        poll_interval: Duration::from_millis(20),
        lease_ttl: Duration::from_secs(2),
        rebroadcast_after: Duration::from_millis(500),
        ..PipelineSettings::default()
    }
}

impl Stack {
    pub async fn start(anvil_args: &[&str]) -> Self {
        let dir = std::env::temp_dir().join(format!("streampay-pipe-{}-{}", std::process::id(), free_port().unwrap()));
        std::fs::create_dir_all(&dir).unwrap();
        // The chain's state is dumped when Anvil stops, so `restart_anvil` can load it back.
        let state = dir.join("anvil-state.json").display().to_string();
        let mut anvil_args: Vec<String> = anvil_args.iter().map(|a| a.to_string()).collect();
        anvil_args.extend(["--dump-state".to_string(), state]);
        let anvil = spawn_anvil(&anvil_args, None);
        let anvil_port = anvil.port();
        let anvil_url = anvil.endpoint();
        let deployer: PrivateKeySigner = anvil.keys()[0].clone().into();
        let deployer_address = deployer.address();
        let admin = ProviderBuilder::new().wallet(deployer).connect_http(anvil.endpoint_url()).erased();
        let provider = chain::connect(&anvil.endpoint()).expect("provider");
        let automine = !anvil_args.iter().any(|a| a == "--no-mining");
        let token_deploy = MockToken::deploy_builder(&admin, "Mock USD Coin".into(), "mUSDC".into());
        let token = deploy(&provider, token_deploy.send().await.expect("deploy token"), automine).await;
        let sp_deploy = StreamPay::deploy_builder(&admin, token, PERMIT2, U256::from(86_400u64));
        let contract = deploy(&provider, sp_deploy.send().await.expect("deploy StreamPay"), automine).await;
        let chain_id = anvil.chain_id();

        let pg_dir = dir.join("pg");
        let cluster = Arc::new(
            tokio::task::spawn_blocking(move || PgCluster::start_on_free_port(&pg_dir, true))
                .await
                .unwrap()
                .expect("pg"),
        );
        cluster.ensure_database("relay").await.expect("db");
        let db_url = cluster.url("relay");
        let store = Store::connect(&db_url, 10).await.expect("connect");
        store.migrate().await.expect("migrate");
        let sponsor_signer: PrivateKeySigner = anvil.keys()[1].clone().into();
        let key = store.create_api_key("test", &[sponsor_signer.address()], true).await.expect("key");
        Self {
            anvil: std::sync::Mutex::new(Some(anvil)),
            anvil_args,
            anvil_port,
            anvil_url,
            chain_id,
            contract,
            token,
            provider,
            admin,
            store,
            db_url,
            api_key: key.key,
            sponsor_signer,
            deployer: deployer_address,
            http: reqwest::Client::builder().timeout(crate::harness::HTTP_TIMEOUT).build().expect("HTTP client"),
            dir,
            cluster,
        }
    }

    pub fn anvil_url(&self) -> reqwest::Url {
        self.anvil_url.parse().unwrap()
    }

    /// Stops Anvil (SIGTERM: it dumps its state), leaves it down for `down`, and starts it again
    /// on the same port from the dump. Transactions still in its pool are gone.
    pub async fn restart_anvil(&self, down: Duration) {
        let old = self.anvil.lock().unwrap().take().expect("anvil running");
        tokio::task::spawn_blocking(move || drop(old)).await.unwrap();
        tokio::time::sleep(down).await;
        let mut args = self.anvil_args.clone();
        let state = args[args.len() - 1].clone();
        assert!(std::path::Path::new(&state).exists(), "anvil dumped its state to {state}");
        args.extend(["--load-state".to_string(), state]);
        let port = self.anvil_port;
        let new = tokio::task::spawn_blocking(move || spawn_anvil(&args, Some(port))).await.unwrap();
        *self.anvil.lock().unwrap() = Some(new);
    }

    /// Stops Postgres (fast shutdown: every session is cut), leaves it down for `down`, and
    /// starts it again.
    pub async fn restart_postgres(&self, down: Duration) {
        let c = self.cluster.clone();
        tokio::task::spawn_blocking(move || c.stop_clean()).await.unwrap().expect("stop postgres");
        tokio::time::sleep(down).await;
        let c = self.cluster.clone();
        tokio::task::spawn_blocking(move || c.start_again()).await.unwrap().expect("start postgres");
    }

    pub fn sponsor(&self) -> Address {
        self.sponsor_signer.address()
    }

    /// A relayer replica in this process on the shared database and chain.
    pub async fn replica(&self, settings: PipelineSettings) -> Replica {
        self.replica_via(settings, self.provider.clone()).await
    }

    /// A replica whose every RPC call (API and pipeline) goes through `provider`.
    pub async fn replica_via(&self, settings: PipelineSettings, provider: DynProvider) -> Replica {
        let store = Store::connect(&self.db_url, REPLICA_DB_CONNECTIONS).await.expect("connect");
        let state = server::build_state(
            store,
            vec![ChainParts {
                name: None,
                chain_id: self.chain_id,
                provider,
                finality_depth: settings.confirmations,
                deployments: vec![Deployment {
                    name: "USDC".into(),
                    address: self.contract,
                    token: self.token,
                    token_decimals: 6,
                    start_block: 0,
                }],
                sponsors: Sponsors::from_signers(vec![self.sponsor_signer.clone()], self.chain_id)
                    .with_settings(settings),
            }],
            Settings { receipt_timeout: Duration::from_secs(60), ..crate::harness::serve_settings() },
        )
        .unwrap();
        let supervisor = Supervisor::new();
        server::start_pipelines(&state, &supervisor);
        server::start_pricing(&state, &supervisor);
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr: SocketAddr = listener.local_addr().unwrap();
        let app = api::app(state.clone());
        tokio::spawn(async move {
            // The replica's pipeline lives as long as its server.
            let _supervisor = supervisor;
            axum::serve(listener, app).await.unwrap()
        });
        Replica { base: format!("http://{addr}") }
    }

    /// `streampay serve` as a child process on this stack.
    pub async fn spawn_serve(&self, extra_env: &[(&str, &str)]) -> ServeProcess {
        self.spawn_serve_via(&self.anvil_url.clone(), extra_env).await
    }

    /// `streampay serve` as a child process on this stack, reaching the node at `rpc_url` (a
    /// proxy in front of this stack's Anvil, say).
    pub async fn spawn_serve_via(&self, rpc_url: &str, extra_env: &[(&str, &str)]) -> ServeProcess {
        std::fs::create_dir_all(&self.dir).unwrap();
        // One file per process: another process's may name another node.
        let deployments = self.dir.join(format!("deployment-{}.json", free_port().unwrap()));
        std::fs::write(
            &deployments,
            json!({"chainId": self.chain_id, "rpcUrl": rpc_url, "deployments": [{
                "name": "USDC", "address": self.contract, "token": self.token, "tokenDecimals": 6, "startBlock": 0
            }]})
            .to_string(),
        )
        .unwrap();
        let port = free_port().unwrap();
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_streampay"));
        cmd.arg("serve")
            .current_dir(&self.dir)
            .env_clear()
            .env("PATH", std::env::var("PATH").unwrap_or_default())
            .env("STREAMPAY_LISTEN", format!("127.0.0.1:{port}"))
            .env("STREAMPAY_DATABASE_URL", &self.db_url)
            .env("STREAMPAY_DEPLOYMENTS_FILE", &deployments)
            .env("STREAMPAY_SPONSOR_KEYS", format!("0x{}", alloy::hex::encode(self.sponsor_signer.to_bytes())))
            .env("STREAMPAY_PIPELINE_POLL_INTERVAL_MS", "20")
            .env("STREAMPAY_PIPELINE_LEASE_TTL_SECS", "1")
            .env("STREAMPAY_PIPELINE_REBROADCAST_AFTER_SECS", "1")
            .env("STREAMPAY_LOG_FORMAT", "text")
            .env("RUST_LOG", "warn")
            .stdout(Stdio::null())
            .stderr(Stdio::inherit());
        for (k, v) in extra_env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().expect("spawn streampay serve");
        let base = format!("http://127.0.0.1:{port}");
        for _ in 0..200 {
            if self.http.get(format!("{base}/health")).send().await.is_ok() {
                return ServeProcess { child, base };
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        panic!("streampay serve did not come up");
    }

    pub async fn mine(&self) {
        let _: Value = self.provider.raw_request("evm_mine".into(), ()).await.expect("evm_mine");
    }

    /// Mints `amount` to each of `to`, then mines a block (with or without automine: see below).
    pub async fn mint_many(&self, to: &[Address], amount: U256, _automine: bool) {
        // Explicit nonces, gas and fees: sent concurrently with no per-transaction lookups.
        let token = MockToken::new(self.token, &self.admin);
        let first = self.provider.get_transaction_count(self.deployer).pending().await.expect("deployer nonce");
        let fees = self.provider.estimate_eip1559_fees().await.expect("fees");
        let calls: Vec<_> = to
            .iter()
            .enumerate()
            .map(|(i, who)| {
                token
                    .mint(*who, amount)
                    .nonce(first + i as u64)
                    .gas(100_000)
                    .max_fee_per_gas(fees.max_fee_per_gas * 2)
                    .max_priority_fee_per_gas(fees.max_priority_fee_per_gas)
            })
            .collect();
        // Automine off while the mints go out: sent concurrently, they reach the node out of nonce
        // order, and with automine mining a block per arrival a CI run once had a mint stay in the
        // pool ("already imported") while blocks were mined without it, stuck at 399 of 1,002
        // for 150 s. Into a pool that only fills, order does not matter; blocks are mined below.
        // The hash of each mint is known whether or not its send got through: a mint with a given
        // nonce signs to the same bytes every time.
        let automine: bool =
            self.provider.raw_request("anvil_getAutomine".into(), ()).await.expect("anvil_getAutomine");
        let _: Value = self.provider.raw_request("evm_setAutomine".into(), (false,)).await.expect("evm_setAutomine");
        let sends = calls.iter().map(|c| c.send());
        let sent: Vec<_> = futures::stream::iter(sends).buffered(32).collect().await;
        let mut hashes = Vec::with_capacity(calls.len());
        let mut send_errors = Vec::new();
        for (i, r) in sent.into_iter().enumerate() {
            let pending = match r {
                Ok(p) => p,
                Err(e) => {
                    send_errors.push(format!("nonce {}: {e}", first + i as u64));
                    calls[i]
                        .send()
                        .await
                        .unwrap_or_else(|e| panic!("mint with nonce {} could not be sent: {e}", first + i as u64))
                }
            };
            hashes.push(*pending.tx_hash());
        }
        // Without automine (or with a block full), mints wait in the pool: blocks are mined until
        // the deployer's mined count covers every mint (at 100,000 gas each a 30M-gas block holds
        // at most 300). When a block adds nothing, the mint with the next nonce is sent again (a
        // CI run once stalled at 292 of 1,002 with mints sent concurrently).
        let target = first + to.len() as u64;
        let end = tokio::time::Instant::now() + crate::harness::BULK_RECEIPTS_TIMEOUT;
        let mut last = None;
        loop {
            let mined = self.provider.get_transaction_count(self.deployer).latest().await.expect("deployer nonce");
            if mined >= target {
                break;
            }
            assert!(
                tokio::time::Instant::now() < end,
                "mints still pending: {mined} of {target} mined; send errors: {send_errors:?}"
            );
            if last == Some(mined)
                && let Err(e) = calls[(mined - first) as usize].send().await
            {
                send_errors.push(format!("resend of nonce {mined}: {e}"));
            }
            last = Some(mined);
            self.mine().await;
        }
        let _: Value = self.provider.raw_request("evm_setAutomine".into(), (automine,)).await.expect("evm_setAutomine");
        let receipts = futures::stream::iter(hashes.iter().map(|h| self.provider.get_transaction_receipt(*h)))
            .buffered(32)
            .collect::<Vec<_>>()
            .await;
        for (i, r) in receipts.into_iter().enumerate() {
            let r = r
                .expect("mint receipt")
                .unwrap_or_else(|| panic!("no receipt for the mint with nonce {}", first + i as u64));
            assert!(r.status(), "mint succeeded");
        }
    }

    /// Executes `bodies` (`Prefer: respond-async`) through `base` so that `bodies[0]` is queued
    /// alone and the others together, in one batch (one bundle): the sponsor's nonce row is held
    /// (on a connection of the test's own) while the first call reaches it and holds the
    /// sponsor's enqueue lock, the others are admitted behind it, and the row is released once
    /// all are admitted. Answers each call's row id, in `bodies` order.
    pub async fn execute_behind_a_blocker(&self, base: &str, bodies: &[Value]) -> Vec<i64> {
        use sqlx::Connection;
        let mut locker = sqlx::PgConnection::connect(&self.db_url).await.unwrap();
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        let lock = loop {
            let mut lock = locker.begin().await.unwrap();
            let held: Vec<i32> =
                sqlx::query_scalar("SELECT 1 FROM sponsor_accounts FOR UPDATE").fetch_all(&mut *lock).await.unwrap();
            if held.len() == 1 {
                break lock;
            }
            lock.rollback().await.unwrap();
            assert!(tokio::time::Instant::now() < end, "the sponsor's row was not created");
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let admitted = |n: usize| async move {
            let end = tokio::time::Instant::now() + Duration::from_secs(30);
            loop {
                let got: i64 = sqlx::query_scalar("SELECT count(*) FROM admission_reservations")
                    .fetch_one(self.store.pool())
                    .await
                    .unwrap();
                if got >= n as i64 {
                    return;
                }
                assert!(tokio::time::Instant::now() < end, "only {got} of {n} executes reached the queue");
                tokio::time::sleep(Duration::from_millis(10)).await;
            }
        };
        let async_ = &[("Prefer", "respond-async")];
        let path = "/api/v1/USDC/meta/execute";
        let first = self.post(base, path, &bodies[0], async_);
        let rest = async {
            admitted(1).await;
            // The first call was admitted; a moment more and it holds the enqueue lock (one RPC
            // away). Were it not there yet, the others would share its batch, which the callers'
            // assertions on the queue would show.
            tokio::time::sleep(Duration::from_millis(300)).await;
            futures::future::join_all(bodies[1..].iter().map(|b| self.post(base, path, b, async_))).await
        };
        let release = async {
            admitted(bodies.len()).await;
            lock.rollback().await.unwrap();
        };
        let (first, rest, ()) = tokio::join!(first, rest, release);
        std::iter::once(first)
            .chain(rest)
            .map(|(status, out)| {
                assert_eq!(status, StatusCode::ACCEPTED, "{out}");
                out["TransactionId"].as_i64().unwrap_or_else(|| panic!("no transaction id: {out}"))
            })
            .collect()
    }

    pub async fn post(&self, base: &str, path: &str, body: &Value, headers: &[(&str, &str)]) -> (StatusCode, Value) {
        let mut r = self.http.post(format!("{base}{path}")).header("X-API-Key", &self.api_key).json(body);
        for (k, v) in headers {
            r = r.header(*k, *v);
        }
        let resp = r.send().await.expect("request");
        let status = resp.status();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or_else(|_| panic!("non-JSON ({status}): {text}")))
    }

    pub async fn get(&self, base: &str, path: &str) -> (StatusCode, Value) {
        let resp = self.http.get(format!("{base}{path}")).header("X-API-Key", &self.api_key).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap())
    }

    /// Builds a gasless deposit of `n` tokens for `user` and signs it (call + permit).
    pub async fn signed_deposit(&self, base: &str, user: &PrivateKeySigner, n: u64) -> Value {
        let (status, built) = self
            .post(base, "/api/v1/USDC/payments/deposit", &json!({"From": user.address(), "Amount": n.to_string()}), &[])
            .await;
        assert_eq!(status, StatusCode::OK, "{built}");
        let t = &built["Transaction"];
        let p = &t["PermitTypedData"];
        json!({
            "From": t["From"],
            "Signature": sign_document(user, &t["TypedData"]).await,
            "Data": t["Data"],
            "Nonce": t["Nonce"],
            "Sponsor": built["Sponsor"],
            "Deadline": t["Deadline"],
            "Permit": {
                "Value": p["message"]["value"],
                "Deadline": p["message"]["deadline"],
                "Signature": sign_document(user, p).await,
            },
        })
    }

    pub async fn balance_of(&self, who: Address) -> U256 {
        StreamPay::new(self.contract, &self.provider).balanceOf(who).call().await.expect("balanceOf")
    }

    pub async fn sponsor_chain_nonce(&self) -> u64 {
        self.provider.get_transaction_count(self.sponsor()).latest().await.unwrap()
    }

    /// `(status, sponsor_nonce)` of every queued row, by id.
    pub async fn rows(&self) -> Vec<(String, u64)> {
        sqlx::query_as::<_, (String, i64)>("SELECT status, sponsor_nonce FROM relay_transactions ORDER BY id")
            .fetch_all(self.store.pool())
            .await
            .unwrap()
            .into_iter()
            .map(|(s, n)| (s, n as u64))
            .collect()
    }

    /// Waits (20 s at most) until the node has taken every row: none is `pending` any more.
    ///
    /// A test that mines by hand mines only after this. Anvil's `eth_sendRawTransaction` reads
    /// the sender's nonce on chain, then puts the transaction in its pool as waiting for the one
    /// before it. A block that mines that one in between leaves it waiting for a transaction the
    /// pool will never see again: it is mined only once a replacement at its nonce comes (the
    /// relayer's fee bump, 30 s on). Automine can mine at any moment.
    pub async fn wait_sent(&self) {
        let end = tokio::time::Instant::now() + Duration::from_secs(20);
        while self.rows().await.iter().any(|(s, _)| s == "pending") {
            assert!(tokio::time::Instant::now() < end, "rows not sent: {:?}", self.rows().await);
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until no row is pending or submitted, mining a block per round if asked.
    pub async fn settle(&self, mine: bool, timeout: Duration) {
        let end = tokio::time::Instant::now() + timeout;
        loop {
            let open = self.rows().await.iter().filter(|(s, _)| s == "pending" || s == "submitted").count();
            if open == 0 {
                return;
            }
            assert!(tokio::time::Instant::now() < end, "rows still open: {:?}", self.rows().await);
            if mine {
                self.mine().await;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// The invariants every fault test ends with: each accepted request's call executed exactly
    /// once (`users` deposited `n` each), every row mined, and the sponsor's nonces on chain
    /// gap-free: the chain's count is exactly our rows plus `outside` transactions.
    pub async fn assert_exactly_once(&self, users: &[PrivateKeySigner], n: u64, outside: u64) {
        for u in users {
            assert_eq!(self.balance_of(u.address()).await, U256::from(n) * U256::from(10u64).pow(U256::from(18)));
        }
        let rows = self.rows().await;
        assert_eq!(rows.len(), users.len(), "one row per accepted request: {rows:?}");
        assert!(rows.iter().all(|(s, _)| s == "mined" || s == "confirmed"), "{rows:?}");
        // One nonce per transaction (a call sent alone, or a bundle, whose rows share its
        // leader's nonce and hash).
        let (transactions, nonces, astray): (i64, i64, i64) = sqlx::query_as(
            "SELECT count(DISTINCT coalesce(bundle_id, id)), count(DISTINCT sponsor_nonce),
                    (SELECT count(*) FROM relay_transactions m JOIN relay_transactions l ON l.id = m.bundle_id
                     WHERE m.sponsor_nonce <> l.sponsor_nonce OR m.tx_hash <> l.tx_hash)
             FROM relay_transactions",
        )
        .fetch_one(self.store.pool())
        .await
        .unwrap();
        assert_eq!(astray, 0, "a bundle's rows share its nonce and hash: {rows:?}");
        assert_eq!(nonces, transactions, "no nonce used twice: {rows:?}");
        assert_eq!(
            self.sponsor_chain_nonce().await,
            transactions as u64 + outside,
            "no transaction sent twice, no gap"
        );
        // Every row's mined hash is on chain from the sponsor at its nonce.
        let hashes: Vec<(Vec<u8>, i64)> = sqlx::query_as("SELECT tx_hash, sponsor_nonce FROM relay_transactions")
            .fetch_all(self.store.pool())
            .await
            .unwrap();
        for (h, nonce) in hashes {
            let tx =
                self.provider.get_transaction_by_hash(alloy::primitives::B256::from_slice(&h)).await.unwrap().unwrap();
            assert_eq!(alloy::consensus::Transaction::nonce(&tx) as i64, nonce);
        }
    }

    /// Builds and signs a deposit of `n` for each user, 16 at a time, against `base_of(i)`.
    pub async fn signed_deposits(
        &self,
        users: &[PrivateKeySigner],
        n: u64,
        base_of: impl Fn(usize) -> String,
    ) -> Vec<(String, Value)> {
        let builds = users.iter().enumerate().map(|(i, u)| {
            let base = base_of(i);
            async move {
                let body = self.signed_deposit(&base, u, n).await;
                (base, body)
            }
        });
        futures::stream::iter(builds).buffered(16).collect().await
    }

    pub fn users(&self, n: usize) -> Vec<PrivateKeySigner> {
        (0..n).map(|_| PrivateKeySigner::random()).collect()
    }

    pub async fn fund_wallets(&self, users: &[PrivateKeySigner], n: u64, automine: bool) {
        self.mint_many(&users.iter().map(|u| u.address()).collect::<Vec<_>>(), tokens(n), automine).await;
    }
}

fn spawn_anvil(args: &[String], port: Option<u16>) -> AnvilInstance {
    let mut anvil = Anvil::new().path(PathBuf::from(env!("CARGO_MANIFEST_DIR")).join(".tools/bin/anvil")).args(args);
    if let Some(port) = port {
        anvil = anvil.port(port);
    }
    anvil.try_spawn().expect("spawn anvil")
}

async fn deploy(
    provider: &DynProvider,
    pending: alloy::providers::PendingTransactionBuilder<alloy::network::Ethereum>,
    automine: bool,
) -> Address {
    if !automine {
        let _: Value = provider.raw_request("evm_mine".into(), ()).await.unwrap();
    }
    pending.mined().await.contract_address.expect("contract address")
}
