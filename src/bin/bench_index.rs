//! Indexer benchmarks (issue 4), printed as Markdown for BENCHMARKS.md.
//!
//! 1. **Backfill**: generates a chain with at least `--events` StreamPay events on a local Anvil
//!    (deposits, multicall payments, subscribes, re-subscribes, unsubscribes, bySig-free), then
//!    times a cold backfill into an empty database, beside the baseline of the same run: the
//!    same `idx_events` rows inserted by one plain `COPY` into another empty database.
//! 2. **Live lag**: with the indexer following the head, a block is mined every `--block-ms`;
//!    the lag (chain head − indexed head) is sampled just before each new block.
//! 3. **Reads under load**: `--concurrency` tasks issue balance / subscriptions / incoming
//!    streams reads from the index (the read model the API serves) for random accounts, beside
//!    the same views by direct `eth_call` to the same Anvil; p50/p99 latency and requests/s.
//!
//! Run: `cargo run --release --bin bench_index -- [--events 100000]`
//! (needs `.tools/bin/anvil` and the PostgreSQL 15 binaries; starts and removes its own).

use std::{
    path::PathBuf,
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{
    node_bindings::Anvil,
    primitives::{Address, Bytes, U256, Uint},
    providers::{DynProvider, Provider, ProviderBuilder},
    rpc::types::Filter,
    signers::local::PrivateKeySigner,
    sol_types::SolCall,
};
use anyhow::Context;
use futures::{StreamExt, stream};
use sqlx::PgPool;
use streampay_relayer::{
    chain::{MockToken, StreamPay},
    dev::postgres::PgCluster,
    indexer::{IndexReader, Indexer, IndexerConfig, RpcLogSource, events::decode_logs},
    store::{
        Store,
        index::{Scope, copy_text, events},
    },
};

const PERMIT2: Address = alloy::primitives::address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");

struct Args {
    events: usize,
    block_ms: u64,
    lag_blocks: usize,
    concurrency: usize,
    reads: usize,
    rounds: usize,
}

fn args() -> Args {
    let mut a = Args { events: 100_000, block_ms: 250, lag_blocks: 40, concurrency: 32, reads: 20_000, rounds: 3 };
    let argv: Vec<String> = std::env::args().skip(1).collect();
    for w in argv.chunks(2) {
        let v = w.get(1).map(String::as_str).unwrap_or_default();
        match w[0].as_str() {
            "--events" => a.events = v.parse().expect("--events N"),
            "--block-ms" => a.block_ms = v.parse().expect("--block-ms N"),
            "--lag-blocks" => a.lag_blocks = v.parse().expect("--lag-blocks N"),
            "--concurrency" => a.concurrency = v.parse().expect("--concurrency N"),
            "--reads" => a.reads = v.parse().expect("--reads N"),
            "--rounds" => a.rounds = v.parse::<usize>().expect("--rounds N").max(1),
            other => panic!("unknown argument {other}"),
        }
    }
    a
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    if std::env::var_os("RUST_LOG").is_some() {
        tracing_subscriber::fmt()
            .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
            .with_writer(std::io::stderr)
            .init();
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let anvil = Anvil::new()
        .path(root.join(".tools/bin/anvil"))
        .args(["--gas-limit", "300000000", "--order", "fifo"])
        .try_spawn()
        .context("spawn anvil")?;
    let deployer: PrivateKeySigner = anvil.keys()[0].clone().into();
    let admin = ProviderBuilder::new().wallet(deployer.clone()).connect_http(anvil.endpoint_url()).erased();
    let token = *MockToken::deploy(&admin, "Mock USD Coin".into(), "mUSDC".into()).await?.address();
    let contract = *StreamPay::deploy(&admin, token, PERMIT2, U256::from(86_400u64)).await?.address();
    let chain_id = anvil.chain_id();

    // ---------------------------------------------------------------- generate the chain
    let t = Instant::now();
    let (users, authors, payer) = generate(&anvil, &admin, token, contract, args.events).await?;
    let plain = chain_provider(&anvil.endpoint());
    let head = plain.get_block_number().await?;
    let logs = RpcLogSource::new(plain.clone());
    let all_logs = plain.get_logs(&Filter::new().address(contract).from_block(0).to_block(head)).await?;
    eprintln!("generated {} events in {} blocks in {:.1?}", all_logs.len(), head, t.elapsed());

    let dir = std::env::temp_dir().join(format!("streampay-bench-{}", std::process::id()));
    let cluster = PgCluster::start_on_free_port(&dir, true)?;

    // ------------------------------------------- baseline (one COPY) and cold backfill, alternated
    // The machine is shared (2 cores), so each side runs `--rounds` times into a fresh database,
    // alternating, and the medians are compared.
    let source_logs: Vec<_> = {
        use streampay_relayer::indexer::LogSource;
        logs.logs(contract, 0, head).await?
    };
    let events = decode_logs(&source_logs, |_| None)?;
    let scope = Scope { chain_id, contract };
    let cfg = IndexerConfig::from_env(|k| std::env::var(k).ok())?; // defaults unless STREAMPAY_INDEXER_* set
    let mut copy_runs = Vec::new();
    let mut backfill_runs = Vec::new();
    let mut index_pool = None;
    for round in 0..args.rounds {
        let db = format!("baseline{round}");
        cluster.ensure_database(&db).await?;
        let baseline_pool = pool(&cluster, &db).await?;
        let text = copy_text(scope, &events);
        let t = Instant::now();
        let copied = events::copy_committed(&baseline_pool, text).await?;
        copy_runs.push(t.elapsed().as_secs_f64());
        baseline_pool.close().await;

        let db = format!("index{round}");
        cluster.ensure_database(&db).await?;
        let p = pool(&cluster, &db).await?;
        let indexer = Indexer::new(Arc::new(logs.clone()), p.clone(), chain_id, contract, 0, cfg.clone());
        let t = Instant::now();
        indexer.sync_to_head().await?;
        backfill_runs.push(t.elapsed().as_secs_f64());
        let stored = events::count_all(&p).await?;
        anyhow::ensure!(stored as u64 == copied, "backfill stored {stored} events, COPY {copied}");
        eprintln!("round {round}: COPY {:.2} s, backfill {:.2} s", copy_runs[round], backfill_runs[round]);
        if let Some(old) = index_pool.replace(p) {
            old.close().await;
        }
    }
    let index_pool = index_pool.context("at least one round")?;
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (copy_secs, backfill_secs) = (median(&mut copy_runs.clone()), median(&mut backfill_runs.clone()));

    // ---------------------------------------------------------------- live lag
    let follower = Indexer::new(
        Arc::new(logs.clone()),
        index_pool.clone(),
        chain_id,
        contract,
        0,
        IndexerConfig { poll_interval: Duration::from_millis(20), ..cfg.clone() },
    );
    let status = follower.status();
    let (stop_tx, mut stop_rx) = tokio::sync::watch::channel(false);
    let follow_task = tokio::spawn(follower.run(async move {
        let _ = stop_rx.wait_for(|s| *s).await;
    }));
    let sp = StreamPay::new(contract, &payer);
    let mut lags = Vec::new();
    let mut catchup_ms = Vec::new();
    tokio::time::sleep(Duration::from_millis(500)).await;
    for i in 0..args.lag_blocks {
        let calls: Vec<Bytes> = (0..10).map(|j| pay(users[(i + j) % users.len()], U256::from(1u8))).collect();
        sp.multicall(calls).send().await?.get_receipt().await?;
        // From the receipt (alloy polls for it every 250 ms locally, so this is an upper bound
        // minus that delay) to the index having the block.
        let mined = Instant::now();
        let block = plain.get_block_number().await?;
        loop {
            if status.borrow().indexed_block >= block || mined.elapsed() > Duration::from_secs(10) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        catchup_ms.push(mined.elapsed().as_secs_f64() * 1e3);
        tokio::time::sleep(Duration::from_millis(args.block_ms)).await;
        // Sampled just before the next block: how far behind the index is.
        let h = plain.get_block_number().await?;
        lags.push(h.saturating_sub(status.borrow().indexed_block));
    }
    stop_tx.send(true)?;
    follow_task.await??;

    // ---------------------------------------------------------------- reads under load
    let plain_reader = IndexReader::new(index_pool.clone(), chain_id);
    let cached_reader = IndexReader::with_cache(index_pool.clone(), chain_id);
    while !cached_reader.cache_active() {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut accounts: Vec<Address> = users.clone();
    accounts.extend(&authors);
    let view = StreamPay::new(contract, plain.clone());
    // The read model behind HTTP/JSON, like the API's read endpoints, so that both sides of
    // the comparison pay for an HTTP round trip and JSON.
    let http_base = serve_reads(cached_reader.clone(), contract).await?;
    let http = alloy::transports::http::reqwest::Client::new();
    // And the relayer's own read endpoints: `api::app` with every layer (auth with its key cache,
    // request ids, metrics, tracing) and the same cached read model `serve` uses.
    let (api_base, api_key) = serve_api(index_pool.clone(), &anvil, chain_id, contract, token).await?;
    let mut read_rows = Vec::new();
    for kind in ["balance", "subscriptions", "incoming streams"] {
        let mut results = Vec::new();
        for reader in [&cached_reader, &plain_reader] {
            let run = |total| {
                load(total, args.concurrency, &accounts, |a| {
                    let reader = reader.clone();
                    async move {
                        match kind {
                            "balance" => reader.balance(contract, a).await.map(|_| ()),
                            "subscriptions" => reader.subscriptions(contract, a).await.map(|_| ()),
                            _ => reader.incoming_streams(contract, a).await.map(|_| ()),
                        }
                    }
                })
            };
            run(args.reads / 10).await?; // warm-up: connections, prepared statements
            results.push(run(args.reads).await?);
        }
        let path = match kind {
            "balance" => "balance",
            "subscriptions" => "subscriptions",
            _ => "incoming",
        };
        let run = |total| {
            load(total, args.concurrency, &accounts, |a| {
                let (http, url) = (http.clone(), format!("{http_base}/{path}/{a}"));
                async move {
                    let body = http.get(url).send().await?.error_for_status()?.bytes().await?;
                    anyhow::ensure!(!body.is_empty());
                    anyhow::Ok(())
                }
            })
        };
        run(args.reads / 10).await?;
        let over_http = run(args.reads).await?;
        let api_path = match kind {
            "balance" => "payments/balance/{a}",
            "subscriptions" => "subscriptions/{a}",
            _ => "authors/{a}/streams",
        };
        let run = |total| {
            load(total, args.concurrency, &accounts, |a| {
                let url = format!("{api_base}/api/v1/USDC/{}", api_path.replace("{a}", &a.to_string()));
                let req = http.get(url).header("X-API-Key", &api_key);
                async move {
                    let body = req.send().await?.error_for_status()?.bytes().await?;
                    anyhow::ensure!(!body.is_empty());
                    anyhow::Ok(())
                }
            })
        };
        run(args.reads / 10).await?;
        let over_api = run(args.reads).await?;
        let run = |total| {
            load(total, args.concurrency, &accounts, |a| {
                let view = view.clone();
                let subscribers = users.clone();
                async move {
                    match kind {
                        "balance" => view.balanceOf(a).call().await.map(|_| ())?,
                        "subscriptions" => view.allSubscriptions(a).call().await.map(|_| ())?,
                        // The chain has no per-author view: an author's incoming streams take one
                        // `subscriptions(from, to)` per possible subscriber (8 here).
                        _ => {
                            for s in &subscribers {
                                view.subscriptions(*s, a).call().await?;
                            }
                        }
                    }
                    anyhow::Ok(())
                }
            })
        };
        run(args.reads / 10).await?;
        let rpc = run(args.reads).await?;
        let plain_db = results.pop().expect("two runs");
        let cached = results.pop().expect("two runs");
        read_rows.push((kind, over_api, over_http, cached, plain_db, rpc));
    }

    // ---------------------------------------------------------------- report
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let n = events.len() as f64;
    println!("Machine: {} cores ({cpu}); Anvil {} blocks; PostgreSQL 15 (fsync off, local socket).", num_cpus(), head);
    println!();
    let fmt = |v: &[f64]| v.iter().map(|x| format!("{x:.2}")).collect::<Vec<_>>().join(", ");
    println!(
        "| backfill of {} events, median of {} rounds | seconds (each round) | events/s (median) |",
        events.len(),
        args.rounds
    );
    println!("|---|---:|---:|");
    println!("| baseline: one plain `COPY` of the same rows | {} | {:.0} |", fmt(&copy_runs), n / copy_secs);
    println!(
        "| indexer cold backfill (eth_getLogs + decode + COPY + derived state + checkpoint) | {} | {:.0} |",
        fmt(&backfill_runs),
        n / backfill_secs
    );
    println!("| ratio indexer / COPY | | {:.2} |", copy_secs / backfill_secs);
    println!();
    lags.sort();
    catchup_ms.sort_by(f64::total_cmp);
    println!(
        "Live: {} blocks mined every ~{} ms; lag sampled before each next block: max {} block(s), {} of {} samples at 0; \
         time from a block's receipt to the index having it: p50 {:.0} ms, max {:.0} ms.",
        args.lag_blocks,
        args.block_ms,
        lags.last().copied().unwrap_or(0),
        lags.iter().filter(|l| **l == 0).count(),
        lags.len(),
        pct(&catchup_ms, 50.0),
        catchup_ms.last().copied().unwrap_or(0.0)
    );
    println!();
    println!(
        "| read ({} requests, {} concurrent, random accounts) | p50 ms | p99 ms | req/s | vs eth_call |",
        args.reads, args.concurrency
    );
    println!("|---|---:|---:|---:|---:|");
    for (kind, api, http, cached, db, rpc) in read_rows {
        for (label, r) in [
            ("relayer API endpoint (X-API-Key + cached read model)", &api),
            ("index over HTTP/JSON (cached reader)", &http),
            ("index, in-process cached reader", &cached),
            ("index, in-process, Postgres every call", &db),
            ("direct `eth_call` to Anvil (HTTP JSON-RPC)", &rpc),
        ] {
            println!("| {kind}: {label} | {:.2} | {:.2} | {:.0} | {:.1}× |", r.p50, r.p99, r.rps, r.rps / rpc.rps);
        }
    }
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    println!();
    println!("Load average at the end of the run: {}", load.split_whitespace().take(3).collect::<Vec<_>>().join(" "));
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// Serves the relayer's API (`api::app`) over the indexed database, reads cached as under
/// `serve`; returns its base URL and an API key.
async fn serve_api(
    pool: PgPool,
    anvil: &alloy::node_bindings::AnvilInstance,
    chain_id: u64,
    contract: Address,
    token: Address,
) -> anyhow::Result<(String, String)> {
    use streampay_relayer::{
        api::{self, Deployment, Settings},
        chains::ChainParts,
        pipeline::Sponsors,
        store::Store,
    };
    let store = Store::from_pool(pool);
    let sponsor: PrivateKeySigner = anvil.keys()[1].clone().into();
    let key = store.create_api_key("bench", &[sponsor.address()], true).await?;
    // As `serve` runs: reads and authenticated keys cached, both cleared by NOTIFY.
    let mut settings = Settings::default();
    settings.indexer.read_cache = true;
    settings.auth.key_cache = true;
    let state = streampay_relayer::server::build_state(
        store,
        vec![ChainParts {
            name: None,
            chain_id,
            provider: streampay_relayer::chain::connect(&anvil.endpoint())?,
            finality_depth: 0,
            deployments: vec![Deployment {
                name: "USDC".into(),
                address: contract,
                token,
                token_decimals: 6,
                start_block: 0,
            }],
            sponsors: Sponsors::from_signers(vec![sponsor], chain_id),
        }],
        settings,
    )?;
    while !state.chains[0].index.cache_active() || !state.key_cache().is_some_and(|c| c.active()) {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, api::app(state)).await });
    Ok((base, key.key))
}

/// Serves `/balance/{a}`, `/subscriptions/{a}`, `/incoming/{a}` from `reader` on a free port.
async fn serve_reads(reader: IndexReader, contract: Address) -> anyhow::Result<String> {
    use axum::{
        Json, Router,
        extract::{Path, State},
        http::StatusCode,
        routing::get,
    };
    type St = State<(IndexReader, Address)>;
    fn fail(e: anyhow::Error) -> StatusCode {
        eprintln!("read failed: {e:#}");
        StatusCode::INTERNAL_SERVER_ERROR
    }
    async fn balance(State((r, c)): St, Path(a): Path<Address>) -> Result<Json<serde_json::Value>, StatusCode> {
        let v = r.balance(c, a).await.map_err(fail)?.ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
        Ok(Json(serde_json::json!({"Address": a, "Balance": v.balance.to_string(), "Block": v.head.block_number})))
    }
    async fn subscriptions(State((r, c)): St, Path(a): Path<Address>) -> Result<Json<serde_json::Value>, StatusCode> {
        let v = r.subscriptions(c, a).await.map_err(fail)?.ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
        Ok(Json(serde_json::to_value(v).map_err(|e| fail(e.into()))?))
    }
    async fn incoming(State((r, c)): St, Path(a): Path<Address>) -> Result<Json<serde_json::Value>, StatusCode> {
        let v = r.incoming_streams(c, a).await.map_err(fail)?.ok_or(StatusCode::SERVICE_UNAVAILABLE)?;
        Ok(Json(serde_json::to_value(v).map_err(|e| fail(e.into()))?))
    }
    let app = Router::new()
        .route("/balance/{a}", get(balance))
        .route("/subscriptions/{a}", get(subscriptions))
        .route("/incoming/{a}", get(incoming))
        .with_state((reader, contract));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let base = format!("http://{}", listener.local_addr()?);
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(base)
}

fn num_cpus() -> usize {
    std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1)
}

fn chain_provider(url: &str) -> DynProvider {
    ProviderBuilder::new().disable_recommended_fillers().connect_http(url.parse().unwrap()).erased()
}

async fn pool(cluster: &PgCluster, db: &str) -> anyhow::Result<PgPool> {
    let pool = sqlx::postgres::PgPoolOptions::new().max_connections(40).connect(&cluster.url(db)).await?;
    Store::from_pool(pool.clone()).migrate().await?;
    Ok(pool)
}

fn pay(to: Address, amount: U256) -> Bytes {
    StreamPay::payCall { receiver: to, amount }.abi_encode().into()
}

/// Fills the chain: `users` deposit, then stream to `authors` and pay each other in multicalls
/// of 500 payments, with clock jumps so settlements differ. Returns (users, authors, a provider
/// signing as the first user).
async fn generate(
    anvil: &alloy::node_bindings::AnvilInstance,
    admin: &DynProvider,
    token: Address,
    contract: Address,
    target: usize,
) -> anyhow::Result<(Vec<Address>, Vec<Address>, DynProvider)> {
    let keys: Vec<PrivateKeySigner> = anvil.keys()[1..9].iter().cloned().map(Into::into).collect();
    let users: Vec<Address> = keys.iter().map(|k| k.address()).collect();
    let authors: Vec<Address> = (0..200).map(|i| Address::with_last_byte(i as u8).create(i)).collect();
    let providers: Vec<DynProvider> = keys
        .iter()
        .map(|k| ProviderBuilder::new().wallet(k.clone()).connect_http(anvil.endpoint_url()).erased())
        .collect();
    let amount = U256::from(1_000_000_000u64) * U256::from(1_000_000u64);
    let mut events = 0usize;
    for (p, u) in providers.iter().zip(&users) {
        MockToken::new(token, admin).mint(*u, amount).send().await?.get_receipt().await?;
        MockToken::new(token, p).approve(contract, U256::MAX).send().await?.get_receipt().await?;
        StreamPay::new(contract, p).deposit(amount, false).send().await?.get_receipt().await?;
        events += 1;
    }
    let mut round = 0usize;
    while events < target {
        let mut pending = Vec::new();
        for (i, p) in providers.iter().enumerate() {
            let sp = StreamPay::new(contract, p);
            let author = authors[(round * 7 + i) % authors.len()];
            // subscribe (a re-subscribe every few rounds), an unsubscribe now and then
            let rate: Uint<96, 2> = Uint::from(1_000_000_000u64 + (round as u64 % 5) * 1_000);
            pending.push(sp.subscribe(author, rate, U256::ZERO).send().await?);
            events += 1;
            if round % 4 == 3 {
                let old = authors[((round - 3) * 7 + i) % authors.len()];
                if let Ok(b) = sp.unsubscribe(old).gas(200_000).send().await {
                    pending.push(b);
                    events += 1;
                }
            }
            let calls: Vec<Bytes> =
                (0..500).map(|j| pay(authors[(round * 13 + i * 31 + j) % authors.len()], U256::from(1 + j))).collect();
            pending.push(sp.multicall(calls).gas(30_000_000).send().await?);
            events += 500;
        }
        for p in pending {
            p.get_receipt().await?;
        }
        let _: serde_json::Value = admin.raw_request("evm_increaseTime".into(), (3_600u64,)).await?;
        let _: serde_json::Value = admin.raw_request("anvil_mine".into(), (20u64,)).await?;
        round += 1;
    }
    Ok((users, authors, providers[0].clone()))
}

struct LoadResult {
    p50: f64,
    p99: f64,
    rps: f64,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * p / 100.0).round() as usize]
}

/// Runs `total` requests with `concurrency` in flight, each for a random account.
async fn load<F, Fut>(total: usize, concurrency: usize, accounts: &[Address], f: F) -> anyhow::Result<LoadResult>
where
    F: Fn(Address) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let t = Instant::now();
    let mut lat: Vec<f64> = stream::iter(0..total)
        .map(|i| {
            let a = accounts[(i * 7919) % accounts.len()];
            let fut = f(a);
            async move {
                let s = Instant::now();
                fut.await.map(|_| s.elapsed().as_secs_f64() * 1e3)
            }
        })
        .buffer_unordered(concurrency)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<anyhow::Result<_>>()?;
    let secs = t.elapsed().as_secs_f64();
    lat.sort_by(f64::total_cmp);
    Ok(LoadResult { p50: pct(&lat, 50.0), p99: pct(&lat, 99.0), rps: total as f64 / secs })
}
