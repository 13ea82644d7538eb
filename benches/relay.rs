//! Relay throughput (issue 5), printed as Markdown for BENCHMARKS.md.
//!
//! One Anvil (automine), one Postgres, and the `streampay serve` binary as a child process. Three
//! runs, each with its own fresh users, every relayed call a gasless deposit with an EIP-2612
//! permit (`permitAndCall(permit, bySig(deposit))`):
//!
//! 1. **Ceiling**: a bare alloy client sends pre-signed transactions carrying the same calls,
//!    from another funded key, straight to the same Anvil; `--concurrency` senders each send one
//!    and poll for its receipt before the next.
//! 2. **Relayer, closed loop**: `--concurrency` HTTP clients each `POST /meta/execute` (signature
//!    check, policy, simulation, queueing, sending, receipt) and wait for the 200 before the next.
//! 3. **Relayer at half the ceiling's rate**: requests issued open-loop at 0.5 × the measured
//!    ceiling rate; latency p50/p99.
//!
//! The relayer's peak RSS is its `VmHWM` from `/proc` after all runs.
//!
//! Run: `cargo bench --bench relay -- [--n 400] [--concurrency 32]`
//! (needs `.tools/bin/anvil` and the PostgreSQL binaries; starts and removes its own).

use std::{
    path::PathBuf,
    process::{Command, Stdio},
    sync::Arc,
    time::{Duration, Instant},
};

use alloy::{
    consensus::{SignableTransaction, TxEip1559, TxEnvelope},
    dyn_abi::TypedData,
    eips::eip2718::Encodable2718,
    network::TxSignerSync,
    node_bindings::Anvil,
    primitives::{Address, B256, Bytes, TxKind, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::{Signer, local::PrivateKeySigner},
    sol_types::{SolCall, SolValue},
};
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use streampay_relayer::{
    chain::{self, MockToken, StreamPay, bindings::IStreamPay},
    dev::postgres::{PgCluster, free_port},
    store::Store,
};

const PERMIT2: Address = alloy::primitives::address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");

struct Args {
    n: usize,
    concurrency: usize,
}

fn args() -> Args {
    let mut a = Args { n: 400, concurrency: 32 };
    let argv: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    for w in argv.chunks(2) {
        let v = w.get(1).map(String::as_str).unwrap_or_default();
        match w[0].as_str() {
            "--n" => a.n = v.parse().expect("--n N"),
            "--concurrency" => a.concurrency = v.parse().expect("--concurrency N"),
            _ => {}
        }
    }
    a
}

/// A built and signed deposit: the execute body, and what the ceiling client needs.
struct Signed {
    body: Value,
    from: Address,
    traits: U256,
    data: Bytes,
    signature: Bytes,
    permit_value: U256,
    permit_deadline: U256,
    permit_signature: alloy::primitives::Signature,
}

struct Bench {
    http: reqwest::Client,
    base: String,
    api_key: String,
}

impl Bench {
    async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp =
            self.http.post(format!("{}{path}", self.base)).header("X-API-Key", &self.api_key).json(body).send().await;
        match resp {
            Ok(r) => {
                let s = r.status().as_u16();
                (s, r.json().await.unwrap_or(Value::Null))
            }
            Err(e) => (0, json!(e.to_string())),
        }
    }
}

async fn sign_doc(signer: &PrivateKeySigner, doc: &Value) -> alloy::primitives::Signature {
    let typed: TypedData = serde_json::from_value(doc.clone()).expect("typed data");
    signer.sign_dynamic_typed_data(&typed).await.expect("sign")
}

async fn build_signed(bench: &Bench, user: &PrivateKeySigner, sponsor: Address) -> Signed {
    let (status, built) = bench
        .post("/api/v1/USDC/payments/deposit", &json!({"From": user.address(), "Amount": "1", "Sponsor": sponsor}))
        .await;
    assert_eq!(status, 200, "build: {built}");
    let t = &built["Transaction"];
    let p = &t["PermitTypedData"];
    let sig = sign_doc(user, &t["TypedData"]).await;
    let permit_sig = sign_doc(user, p).await;
    let hex = |s: &alloy::primitives::Signature| format!("0x{}", alloy::hex::encode(s.as_bytes()));
    let body = json!({
        "From": t["From"], "Signature": hex(&sig), "Data": t["Data"], "Nonce": t["Nonce"],
        "Sponsor": built["Sponsor"], "Deadline": t["Deadline"], "Traits": t["Traits"],
        "Permit": {"Value": p["message"]["value"], "Deadline": p["message"]["deadline"], "Signature": hex(&permit_sig)},
    });
    let num = |v: &Value| -> U256 {
        match v {
            Value::String(s) => s.parse().expect("uint"),
            Value::Number(n) => U256::from(n.as_u64().expect("u64")),
            _ => panic!("not a number: {v}"),
        }
    };
    Signed {
        from: user.address(),
        traits: num(&t["Traits"]),
        data: t["Data"].as_str().unwrap().parse().unwrap(),
        signature: Bytes::from(sig.as_bytes().to_vec()),
        permit_value: num(&p["message"]["value"]),
        permit_deadline: num(&p["message"]["deadline"]),
        permit_signature: permit_sig,
        body,
    }
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn peak_rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|kb| kb.parse::<f64>().ok())
        .map(|kb| kb / 1024.0)
        .unwrap_or(f64::NAN)
}

struct Run {
    rate: f64,
    p50: f64,
    p99: f64,
    ok: usize,
}

fn summarize(mut lat: Vec<Duration>, elapsed: Duration, ok: usize) -> Run {
    lat.sort();
    Run { rate: ok as f64 / elapsed.as_secs_f64(), p50: percentile(&lat, 0.5), p99: percentile(&lat, 0.99), ok }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let anvil = Anvil::new().path(root.join(".tools/bin/anvil")).try_spawn()?;
    let chain_id = anvil.chain_id();
    let deployer: PrivateKeySigner = anvil.keys()[0].clone().into();
    let admin = ProviderBuilder::new().wallet(deployer).connect_http(anvil.endpoint_url()).erased();
    let provider = chain::connect(&anvil.endpoint())?;
    let token = *MockToken::deploy(&admin, "Mock USD Coin".into(), "mUSDC".into()).await?.address();
    let contract = *StreamPay::deploy(&admin, token, PERMIT2, U256::from(86_400u64)).await?.address();
    let relayer_key: PrivateKeySigner = anvil.keys()[1].clone().into();
    let ceiling_key: PrivateKeySigner = anvil.keys()[2].clone().into();

    let dir = std::env::temp_dir().join(format!("streampay-bench-relay-{}", std::process::id()));
    let port = free_port()?;
    let pg_dir = dir.join("pg");
    let cluster = tokio::task::spawn_blocking(move || PgCluster::start(&pg_dir, port, true)).await??;
    cluster.ensure_database("relay").await?;
    let db_url = cluster.url("relay");
    let store = Store::connect(&db_url, 4).await?;
    store.migrate().await?;
    let key = store.create_api_key("bench", &[relayer_key.address(), ceiling_key.address()], true).await?;

    let deployments = dir.join("deployment.json");
    std::fs::write(
        &deployments,
        json!({"chainId": chain_id, "rpcUrl": anvil.endpoint(), "deployments": [{
            "name": "USDC", "address": contract, "token": token, "tokenDecimals": 6, "startBlock": 0}]})
        .to_string(),
    )?;
    let listen_port = free_port()?;
    let poll_ms = "10";
    let mut child = Command::new(env!("CARGO_BIN_EXE_streampay"))
        .arg("serve")
        .current_dir(&dir)
        .env("STREAMPAY_LISTEN", format!("127.0.0.1:{listen_port}"))
        .env("STREAMPAY_DATABASE_URL", &db_url)
        .env("STREAMPAY_DATABASE_MAX_CONNECTIONS", "20")
        .env("STREAMPAY_DEPLOYMENTS_FILE", &deployments)
        .env(
            "STREAMPAY_SPONSOR_KEYS",
            format!(
                "0x{},0x{}",
                alloy::hex::encode(relayer_key.to_bytes()),
                alloy::hex::encode(ceiling_key.to_bytes())
            ),
        )
        .env("STREAMPAY_PIPELINE_POLL_INTERVAL_MS", poll_ms)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .spawn()?;
    let bench = Arc::new(Bench {
        http: reqwest::Client::builder().pool_max_idle_per_host(256).build()?,
        base: format!("http://127.0.0.1:{listen_port}"),
        api_key: key.key,
    });
    for _ in 0..200 {
        if bench.http.get(format!("{}/health", bench.base)).send().await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }

    // --- users: three groups, funded with tokens (no native coin), calls built and signed
    let half_n = args.n / 2;
    let groups = [args.n, args.n, half_n];
    let users: Vec<Vec<PrivateKeySigner>> =
        groups.iter().map(|n| (0..*n).map(|_| PrivateKeySigner::random()).collect()).collect();
    eprintln!("setup: minting to {} users", users.iter().map(Vec::len).sum::<usize>());
    let tokens = U256::from(10u64).pow(U256::from(6u64));
    let mint = MockToken::new(token, &admin);
    let mut pending = Vec::new();
    for u in users.iter().flatten() {
        pending.push(mint.mint(u.address(), tokens).send().await?);
    }
    for p in pending {
        p.get_receipt().await?;
    }
    eprintln!("setup: building and signing");
    let mut signed: Vec<Vec<Signed>> = Vec::new();
    for (g, group) in users.iter().enumerate() {
        let sponsor = if g == 0 { ceiling_key.address() } else { relayer_key.address() };
        let b = bench.clone();
        let built: Vec<Signed> =
            stream::iter(group.iter()).map(|u| build_signed(&b, u, sponsor)).buffered(8).collect().await;
        signed.push(built);
    }

    // --- 1. ceiling: pre-signed permitAndCall(bySig) from the ceiling key, straight to Anvil
    let fees = provider.estimate_eip1559_fees().await?;
    let base_nonce = provider.get_transaction_count(ceiling_key.address()).await?;
    let raws: Vec<Bytes> = signed[0]
        .iter()
        .enumerate()
        .map(|(i, s)| {
            let by_sig = StreamPay::bySigCall {
                signer: s.from,
                sig: IStreamPay::SignedCall { traits: s.traits, data: s.data.clone() },
                signature: s.signature.clone(),
            }
            .abi_encode();
            let ps = &s.permit_signature;
            let v = U256::from(if ps.v() { 28u8 } else { 27u8 });
            let args = (s.from, contract, s.permit_value, s.permit_deadline, v, B256::from(ps.r()), B256::from(ps.s()))
                .abi_encode_params();
            let mut permit = token.to_vec();
            permit.extend_from_slice(&args);
            let input: Bytes =
                StreamPay::permitAndCallCall { permit: permit.into(), action: by_sig.into() }.abi_encode().into();
            let mut tx = TxEip1559 {
                chain_id,
                nonce: base_nonce + i as u64,
                gas_limit: 400_000,
                max_fee_per_gas: fees.max_fee_per_gas * 2,
                max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
                to: TxKind::Call(contract),
                value: U256::ZERO,
                access_list: Default::default(),
                input,
            };
            let sig = ceiling_key.sign_transaction_sync(&mut tx).expect("sign");
            TxEnvelope::from(tx.into_signed(sig)).encoded_2718().into()
        })
        .collect();
    eprintln!("run 1: ceiling ({} transactions)", raws.len());
    let ceiling = {
        let provider = provider.clone();
        let start = Instant::now();
        let results: Vec<Option<Duration>> = stream::iter(raws)
            .map(|raw| {
                let provider: DynProvider = provider.clone();
                async move {
                    let t0 = Instant::now();
                    let hash = *provider.send_raw_transaction(&raw).await.ok()?.tx_hash();
                    loop {
                        if let Ok(Some(r)) = provider.get_transaction_receipt(hash).await {
                            return r.status().then(|| t0.elapsed());
                        }
                        tokio::time::sleep(Duration::from_millis(5)).await;
                    }
                }
            })
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
        let elapsed = start.elapsed();
        let ok = results.iter().flatten().count();
        summarize(results.into_iter().flatten().collect(), elapsed, ok)
    };

    // --- 2. relayer, closed loop
    eprintln!("run 2: relayer closed loop ({} executes)", signed[1].len());
    let execute = |bench: Arc<Bench>, body: Value| async move {
        let t0 = Instant::now();
        let (status, resp) = bench.post("/api/v1/USDC/meta/execute", &body).await;
        if status == 200 {
            Some(t0.elapsed())
        } else {
            eprintln!("execute failed: {status} {resp}");
            None
        }
    };
    let relayed = {
        let start = Instant::now();
        let results: Vec<Option<Duration>> = stream::iter(signed[1].iter())
            .map(|s| execute(bench.clone(), s.body.clone()))
            .buffer_unordered(args.concurrency)
            .collect()
            .await;
        let elapsed = start.elapsed();
        let ok = results.iter().flatten().count();
        summarize(results.into_iter().flatten().collect(), elapsed, ok)
    };

    // --- 3. relayer, open loop at half the ceiling's rate
    let half_rate = ceiling.rate / 2.0;
    eprintln!("run 3: relayer at {half_rate:.0}/s ({} executes)", signed[2].len());
    let paced = {
        let interval = Duration::from_secs_f64(1.0 / half_rate);
        let start = Instant::now();
        let mut handles = Vec::new();
        for (i, s) in signed[2].iter().enumerate() {
            let at = start + interval * i as u32;
            tokio::time::sleep_until(at.into()).await;
            handles.push(tokio::spawn(execute(bench.clone(), s.body.clone())));
        }
        let mut lat = Vec::new();
        for h in handles {
            if let Some(d) = h.await? {
                lat.push(d);
            }
        }
        let ok = lat.len();
        summarize(lat, start.elapsed(), ok)
    };

    let rss = peak_rss_mib(child.id());
    // Exactly once: the relayer's sponsor sent one transaction per accepted relay, no more.
    let relayed_total = relayed.ok + paced.ok;
    let sent = provider.get_transaction_count(relayer_key.address()).await?;
    let rows: i64 =
        sqlx::query_scalar("SELECT count(*) FROM relay_transactions WHERE status IN ('mined', 'confirmed')")
            .fetch_one(store.pool())
            .await?;
    let _ = child.kill();
    let _ = child.wait();
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);

    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    println!("Machine: {cpus} CPUs ({cpu_model}); Anvil automine; relayer poll interval {poll_ms} ms.");
    println!("Command: `cargo bench --bench relay -- --n {} --concurrency {}`", args.n, args.concurrency);
    println!();
    println!("| run | relays ok | relays/s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|");
    println!(
        "| ceiling: bare alloy client, pre-signed bySig txs, {} in flight | {} | {:.1} | {:.1} | {:.1} |",
        args.concurrency, ceiling.ok, ceiling.rate, ceiling.p50, ceiling.p99
    );
    println!(
        "| relayer: HTTP execute → mined, {} in flight | {} | {:.1} | {:.1} | {:.1} |",
        args.concurrency, relayed.ok, relayed.rate, relayed.p50, relayed.p99
    );
    println!(
        "| relayer: open loop at half the ceiling ({half_rate:.1}/s) | {} | {:.1} | {:.1} | {:.1} |",
        paced.ok, paced.rate, paced.p50, paced.p99
    );
    println!();
    println!("Ratio relayer / ceiling: {:.2}. Relayer peak RSS (VmHWM): {rss:.1} MiB.", relayed.rate / ceiling.rate);
    println!(
        "Exactly once: {relayed_total} relays answered 200, {rows} rows mined, {sent} transactions sent by the relayer's sponsor."
    );
    Ok(())
}
