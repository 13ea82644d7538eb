//! Relay throughput against an honest ceiling (issue 14, item 1), printed as Markdown for
//! BENCHMARKS.md.
//!
//! One Anvil, one Postgres, and the release `streampay serve` binary as a child process. Every
//! call, on both sides, is a gasless deposit with an EIP-2612 permit
//! (`permitAndCall(permit, bySig(deposit))`) by a fresh user, built and signed before the clock
//! starts.
//!
//! - **Ceiling** (`C`): the same calls as pre-signed transactions from `anvil.keys()[3]`, a key the
//!   relayer does not have, sent by a pipelined client while the relayer process is **stopped**.
//!   Inclusion is detected per block: one watcher task polls `eth_blockNumber` every 2 ms and
//!   fetches `eth_getBlockReceipts` for each new block, resolving per-hash waiters (no
//!   per-transaction receipt polling). Two runs: a closed loop at `--concurrency` (send, wait for
//!   inclusion, next) and an open-loop maximum (every transaction sent as fast as possible, 64
//!   sends in flight; rate = included / (last inclusion − first send)).
//! - **Relayer** (`R`): the relayer is started (same database, same environment) and answers
//!   `/health`; a closed loop at the same concurrency (`POST /meta/execute` → 200 once mined), an
//!   open loop of synchronous executes at half the preceding ceiling's closed-loop rate, and an
//!   open loop of accepted executes (`Prefer: respond-async` → 202) at the same rate, then a
//!   bounded wait until every accepted call is mined. `/metrics` is scraped before and after, and
//!   the deltas divided by the relays give RPCs per relay by method; `pg_stat_statements`
//!   (preloaded in the bench's cluster) gives the relayer role's Postgres statements per relay.
//! - The relayer is given a pool of `--sponsors` keys (default 4: Anvil's accounts 1, 2, 4, 5; 0
//!   deploys, 3 is the ceiling's) and the calls are built round-robin over them, as a key with
//!   several sponsors spreads its builds.
//! - Rounds alternate `C R C R …` (`--rounds`, after a discarded warm-up of each); medians and the
//!   spread (min–max) are printed, and p99s only from pooled samples of at least 2,000.
//! - **Chain-bound variant** (`--chain-n`, 0 to skip): the same Anvil switched to interval mining
//!   (1 s blocks, `evm_setIntervalMining`) with a block gas limit of 60 measured calls
//!   (`evm_setBlockGasLimit`); both sides driven open loop at 1.2 × that capacity, then the relayer
//!   with synchronous executes at half the capacity (`--chain-sync-n` requests).
//! - **Exactly once**, asserted (the bench panics otherwise): every request answered once with a
//!   200 (202 on the accept path); every ceiling transaction included exactly once and successful;
//!   the pool's nonces rose by exactly the relayer's transactions of each round (a call alone or a
//!   bundle) and the ceiling key's by
//!   exactly its transactions; `relay_transactions` rows mined == relays; every user's StreamPay
//!   balance is exactly its one deposit and its token balance zero.
//!
//! Run: `cargo bench --bench relay -- [--n 1000] [--concurrency 32] [--rounds 3] [--open-n 667]
//! [--chain-n 600] [--chain-sync-n 2000] [--sponsors 4]` (needs `.tools/bin/anvil` and the PostgreSQL binaries;
//! starts and removes its own).

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, Ordering},
    },
    time::{Duration, Instant},
};

use alloy::{
    consensus::{SignableTransaction, TxEip1559, TxEnvelope},
    dyn_abi::TypedData,
    eips::{BlockId, BlockNumberOrTag, eip2718::Encodable2718},
    network::{ReceiptResponse, TxSignerSync},
    node_bindings::Anvil,
    primitives::{Address, B256, Bytes, TxKind, U256},
    providers::{DynProvider, Provider, ProviderBuilder},
    signers::{Signer, local::PrivateKeySigner},
    sol_types::{SolCall, SolValue},
};
use futures::{StreamExt, stream};
use serde_json::{Value, json};
use streampay_relayer::{
    chain::{MockToken, StreamPay, bindings::IStreamPay},
    dev::postgres::{PgCluster, free_port},
    store::Store,
};
use tokio::sync::oneshot;

const PERMIT2: Address = alloy::primitives::address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");
/// How long anything may take to arrive before the bench gives up with a panic naming it.
const WAIT: Duration = Duration::from_secs(120);
/// Chain-bound variant: calls per block (the block gas limit is this many measured calls).
const CALLS_PER_BLOCK: u64 = 60;
/// Pre-signed ceiling transactions pay at most this (the base fee rises under full blocks).
const CEILING_MAX_FEE: u128 = 200_000_000_000;

struct Args {
    n: usize,
    concurrency: usize,
    rounds: usize,
    open_n: usize,
    chain_n: usize,
    chain_sync_n: usize,
    /// Sponsor keys the relayer is given (its pool); calls are built round-robin over them.
    sponsors: usize,
    argv: String,
}

fn args() -> Args {
    let argv: Vec<String> = std::env::args().skip(1).filter(|a| a != "--bench").collect();
    let mut a = Args {
        n: 1000,
        concurrency: 32,
        rounds: 3,
        open_n: 0,
        chain_n: 600,
        chain_sync_n: 2000,
        sponsors: 4,
        argv: argv.join(" "),
    };
    for w in argv.chunks(2) {
        let v = || w.get(1).and_then(|v| v.parse().ok()).unwrap_or_else(|| panic!("{} N", w[0]));
        match w[0].as_str() {
            "--n" => a.n = v(),
            "--concurrency" => a.concurrency = v(),
            "--rounds" => a.rounds = v(),
            "--open-n" => a.open_n = v(),
            "--chain-n" => a.chain_n = v(),
            "--chain-sync-n" => a.chain_sync_n = v(),
            "--sponsors" => a.sponsors = v(),
            other => panic!("unknown argument {other}"),
        }
    }
    assert!((1..=8).contains(&a.sponsors), "--sponsors takes 1 to 8 (Anvil's accounts other than 0 and 3)");
    if a.open_n == 0 {
        // Enough that the pooled open-loop samples of all rounds reach 2,000.
        a.open_n = 2000usize.div_ceil(a.rounds.max(1));
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

fn num(v: &Value) -> U256 {
    match v {
        Value::String(s) => s.parse().expect("uint"),
        Value::Number(n) => U256::from(n.as_u64().expect("u64")),
        _ => panic!("not a number: {v}"),
    }
}

async fn sign_doc(signer: &PrivateKeySigner, doc: &Value) -> alloy::primitives::Signature {
    let typed: TypedData = serde_json::from_value(doc.clone()).expect("typed data");
    signer.sign_dynamic_typed_data(&typed).await.expect("sign")
}

/// Builds a deposit through the relayer's API (sponsor: the relayer's key) and signs it. With
/// `relayer_override`, the signed call's relayer bits are rewritten to that address and the call
/// re-signed by the user, so another key (the ceiling's) may send the very same call.
async fn build_signed(
    http: &HttpClient,
    user: &PrivateKeySigner,
    sponsor: Address,
    relayer_override: Option<Address>,
) -> Signed {
    let (status, built, _) = http
        .post(
            "/api/v1/USDC/payments/deposit",
            &json!({"From": user.address(), "Amount": "1", "Sponsor": sponsor}),
            false,
        )
        .await;
    assert_eq!(status, 200, "build: {built}");
    let mut t = built["Transaction"].clone();
    if let Some(relayer) = relayer_override {
        let mask: U256 = (U256::from(1u8) << 80usize) - U256::from(1u8);
        let low = U256::from_be_slice(relayer.as_slice()) & mask;
        let traits: U256 = (num(&t["Traits"]) & !(mask << 128usize)) | (low << 128usize);
        t["Traits"] = json!(traits.to_string());
        t["TypedData"]["message"]["traits"] = json!(traits.to_string());
    }
    let p = &t["PermitTypedData"];
    let sig = sign_doc(user, &t["TypedData"]).await;
    let permit_sig = sign_doc(user, p).await;
    let hex = |s: &alloy::primitives::Signature| format!("0x{}", alloy::hex::encode(s.as_bytes()));
    let body = json!({
        "From": t["From"], "Signature": hex(&sig), "Data": t["Data"], "Nonce": t["Nonce"],
        "Sponsor": built["Sponsor"], "Deadline": t["Deadline"], "Traits": t["Traits"],
        "Permit": {"Value": p["message"]["value"], "Deadline": p["message"]["deadline"], "Signature": hex(&permit_sig)},
    });
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

/// The ceiling's transaction for `s`: the same `permitAndCall(permit, bySig(deposit))`.
fn ceiling_tx(s: &Signed, key: &PrivateKeySigner, chain_id: u64, nonce: u64, token: Address, contract: Address) -> Tx {
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
        nonce,
        gas_limit: 200_000,
        max_fee_per_gas: CEILING_MAX_FEE,
        max_priority_fee_per_gas: 1_000_000_000,
        to: TxKind::Call(contract),
        value: U256::ZERO,
        access_list: Default::default(),
        input,
    };
    let sig = key.sign_transaction_sync(&mut tx).expect("sign");
    let env = TxEnvelope::from(tx.into_signed(sig));
    Tx { hash: *env.tx_hash(), raw: env.encoded_2718().into() }
}

#[derive(Clone)]
struct Tx {
    hash: B256,
    raw: Bytes,
}

#[derive(Clone)]
struct HttpClient {
    http: reqwest::Client,
    base: String,
    api_key: String,
}

impl HttpClient {
    /// Status, body and the instant the answer arrived.
    async fn post(&self, path: &str, body: &Value, respond_async: bool) -> (u16, Value, Instant) {
        let mut req = self.http.post(format!("{}{path}", self.base)).header("X-API-Key", &self.api_key).json(body);
        if respond_async {
            req = req.header("Prefer", "respond-async");
        }
        match req.send().await {
            Ok(r) => {
                let s = r.status().as_u16();
                let v = r.json().await.unwrap_or(Value::Null);
                (s, v, Instant::now())
            }
            Err(e) => (0, json!(e.to_string()), Instant::now()),
        }
    }

    async fn metrics(&self) -> HashMap<String, f64> {
        let text = self.http.get(format!("{}/metrics", self.base)).send().await.expect("GET /metrics");
        let text = text.text().await.expect("/metrics body");
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .filter_map(|l| {
                let (k, v) = l.rsplit_once(' ')?;
                Some((k.to_string(), v.parse().ok()?))
            })
            .collect()
    }
}

// --- inclusion per block -------------------------------------------------------------------

type Waiters = Arc<Mutex<HashMap<B256, oneshot::Sender<(bool, Instant)>>>>;

/// Follows new blocks (2 ms `eth_blockNumber` poll) and fetches each block's receipts once.
/// A receipt the watcher saw: when its block was seen, its sender, its hash, the calls it carried.
type Seen = (Instant, Address, B256, usize);

struct Watcher {
    waiters: Waiters,
    /// Every receipt seen: when its block was seen, its sender, its hash, the calls it carried.
    log: Arc<Mutex<Vec<Seen>>>,
    stop: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Watcher {
    async fn start(provider: DynProvider) -> Self {
        let waiters: Waiters = Default::default();
        let log: Arc<Mutex<Vec<Seen>>> = Default::default();
        let stop = Arc::new(AtomicBool::new(false));
        let mut last = provider.get_block_number().await.expect("eth_blockNumber");
        let (w, l, s) = (waiters.clone(), log.clone(), stop.clone());
        let task = tokio::spawn(async move {
            while !s.load(Ordering::Relaxed) {
                tokio::time::sleep(Duration::from_millis(2)).await;
                let Ok(head) = provider.get_block_number().await else { continue };
                while last < head {
                    let Ok(Some(receipts)) = provider.get_block_receipts(BlockId::number(last + 1)).await else {
                        break;
                    };
                    let now = Instant::now();
                    let mut log = l.lock().unwrap();
                    let mut waiters = w.lock().unwrap();
                    for r in receipts {
                        // A relayer's bundle carries one call per `BundleCallResult` log.
                        use alloy::sol_types::SolEvent;
                        let results = r
                            .inner
                            .logs()
                            .iter()
                            .filter(|l| l.topics().first() == Some(&StreamPay::BundleCallResult::SIGNATURE_HASH))
                            .count();
                        log.push((now, r.from(), r.transaction_hash(), results.max(1)));
                        if let Some(tx) = waiters.remove(&r.transaction_hash()) {
                            let _ = tx.send((r.status(), now));
                        }
                    }
                    last += 1;
                }
            }
        });
        Self { waiters, log, stop, task }
    }

    fn register(&self, hash: B256) -> oneshot::Receiver<(bool, Instant)> {
        let (tx, rx) = oneshot::channel();
        assert!(self.waiters.lock().unwrap().insert(hash, tx).is_none(), "transaction {hash} registered twice");
        rx
    }

    async fn finish(self) -> Vec<Seen> {
        self.stop.store(true, Ordering::Relaxed);
        self.task.await.expect("watcher");
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

async fn included(rx: oneshot::Receiver<(bool, Instant)>, hash: B256) -> Instant {
    let (ok, at) = tokio::time::timeout(WAIT, rx)
        .await
        .unwrap_or_else(|_| panic!("ceiling transaction {hash} not included within {WAIT:?}"))
        .expect("watcher stopped");
    assert!(ok, "ceiling transaction {hash} reverted");
    at
}

// --- runs ----------------------------------------------------------------------------------

/// One measured run: what was offered, what completed, and each request's latency.
#[derive(Clone, Default)]
struct Run {
    n: usize,
    offered: Option<f64>,
    rate: f64,
    lat: Vec<Duration>,
}

fn run_from(start: Instant, samples: Vec<(Instant, Instant)>, last_done: Instant, offered: Option<f64>) -> Run {
    let n = samples.len();
    let lat = samples.iter().map(|(t0, done)| *done - *t0).collect();
    Run { n, offered, rate: n as f64 / (last_done - start).as_secs_f64(), lat }
}

/// Closed loop: `conc` senders, each sends and waits for the inclusion before its next.
async fn ceiling_closed(p: &DynProvider, w: &Watcher, txs: Vec<Tx>, conc: usize) -> Run {
    let start = Instant::now();
    let samples: Vec<(Instant, Instant)> = stream::iter(txs)
        .map(|tx| async move {
            let rx = w.register(tx.hash);
            let t0 = Instant::now();
            let _ = p.send_raw_transaction(&tx.raw).await.expect("ceiling send");
            (t0, included(rx, tx.hash).await)
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    let last = samples.iter().map(|s| s.1).max().unwrap();
    run_from(start, samples, last, None)
}

/// Open-loop maximum: every transaction sent as fast as possible, 64 sends in flight.
async fn ceiling_max(p: &DynProvider, w: &Watcher, txs: Vec<Tx>) -> Run {
    let rxs: Vec<_> = txs.iter().map(|tx| (w.register(tx.hash), tx.hash)).collect();
    let start = Instant::now();
    let sent: Vec<Instant> = stream::iter(txs)
        .map(|tx| async move {
            let t0 = Instant::now();
            let _ = p.send_raw_transaction(&tx.raw).await.expect("ceiling send");
            t0
        })
        .buffered(64)
        .collect()
        .await;
    let mut samples = Vec::new();
    for ((rx, hash), t0) in rxs.into_iter().zip(sent) {
        samples.push((t0, included(rx, hash).await));
    }
    let last = samples.iter().map(|s| s.1).max().unwrap();
    run_from(start, samples, last, None)
}

/// Open loop at `rate`/s: request `i` starts at `start + i / rate` whatever the others do.
async fn paced<T, F, Fut>(rate: f64, items: Vec<T>, f: F) -> (Instant, Vec<(Instant, Instant)>)
where
    T: Send + 'static,
    F: Fn(T) -> Fut,
    Fut: std::future::Future<Output = Instant> + Send + 'static,
{
    let interval = Duration::from_secs_f64(1.0 / rate);
    let start = Instant::now();
    let mut handles = Vec::new();
    for (i, item) in items.into_iter().enumerate() {
        tokio::time::sleep_until((start + interval * i as u32).into()).await;
        let t0 = Instant::now();
        handles.push((t0, tokio::spawn(f(item))));
    }
    let mut samples = Vec::new();
    for (t0, h) in handles {
        samples.push((t0, tokio::time::timeout(WAIT, h).await.expect("request did not finish").expect("task")));
    }
    (start, samples)
}

async fn ceiling_paced(p: &DynProvider, w: &Watcher, txs: Vec<Tx>, rate: f64) -> Run {
    let items: Vec<_> = txs.into_iter().map(|tx| (w.register(tx.hash), tx)).collect();
    let (start, samples) = paced(rate, items, |(rx, tx)| {
        let p = p.clone();
        async move {
            let _ = p.send_raw_transaction(&tx.raw).await.expect("ceiling send");
            included(rx, tx.hash).await
        }
    })
    .await;
    let last = samples.iter().map(|s| s.1).max().unwrap();
    run_from(start, samples, last, Some(rate))
}

/// One execute; panics unless the answer is 200 (202 with `respond_async`).
async fn execute(http: HttpClient, body: Value, respond_async: bool) -> Instant {
    let (status, resp, at) = http.post("/api/v1/USDC/meta/execute", &body, respond_async).await;
    let want = if respond_async { 202 } else { 200 };
    assert_eq!(status, want, "execute answered {status}, not {want}: {resp}");
    at
}

async fn relayer_closed(http: &HttpClient, calls: &[Signed], conc: usize) -> Run {
    let start = Instant::now();
    let samples: Vec<(Instant, Instant)> = stream::iter(calls)
        .map(|s| {
            let http = http.clone();
            async move {
                let t0 = Instant::now();
                (t0, execute(http, s.body.clone(), false).await)
            }
        })
        .buffer_unordered(conc)
        .collect()
        .await;
    let last = samples.iter().map(|s| s.1).max().unwrap();
    run_from(start, samples, last, None)
}

async fn relayer_paced(http: &HttpClient, calls: &[Signed], rate: f64, respond_async: bool) -> Run {
    let bodies: Vec<Value> = calls.iter().map(|s| s.body.clone()).collect();
    let (start, samples) = paced(rate, bodies, |b| execute(http.clone(), b, respond_async)).await;
    let last = samples.iter().map(|s| s.1).max().unwrap();
    run_from(start, samples, last, Some(rate))
}

/// Included rate of `from`'s transactions in the watcher's log since `start`, in steady state:
/// the calls of the blocks after the first and before the last one, over the time from the first
/// block to the one before the last (a partly filled first or last block does not count).
fn included_rate(log: &[Seen], from: &[Address], start: Instant) -> (usize, f64, Vec<usize>) {
    let mut blocks: BTreeMap<Instant, usize> = BTreeMap::new();
    for (at, f, _, calls) in log {
        if from.contains(f) && *at >= start {
            *blocks.entry(*at).or_insert(0) += calls;
        }
    }
    let n: usize = blocks.values().sum();
    let b: Vec<(Instant, usize)> = blocks.into_iter().collect();
    let k = b.len();
    assert!(k >= 3, "the {n} calls of {from:?} landed in {k} blocks: run longer for a rate");
    let inner: usize = b[1..k - 1].iter().map(|e| e.1).sum();
    (n, inner as f64 / (b[k - 2].0 - b[0].0).as_secs_f64(), b.iter().map(|e| e.1).collect())
}

// --- the relayer process -------------------------------------------------------------------

struct Relayer {
    cmd: Box<dyn Fn() -> Command>,
    child: Option<Child>,
    http: HttpClient,
    peak_rss_mib: f64,
}

impl Relayer {
    async fn start(&mut self) {
        assert!(self.child.is_none(), "relayer already running");
        self.child = Some((self.cmd)().spawn().expect("spawn streampay serve"));
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let r = self.http.http.get(format!("{}/health", self.http.base)).send().await;
            if r.is_ok_and(|r| r.status().is_success()) {
                return;
            }
            assert!(Instant::now() < deadline, "relayer /health did not answer 200 within 60 s");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    fn stop(&mut self) {
        let mut child = self.child.take().expect("relayer not running");
        self.peak_rss_mib = self.peak_rss_mib.max(peak_rss_mib(child.id()));
        unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(15);
        while child.try_wait().expect("wait").is_none() {
            if Instant::now() > deadline {
                let _ = child.kill();
                break;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        child.wait().expect("wait relayer");
    }
}

impl Drop for Relayer {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// CPU seconds (user + system) a process has used, with its exited and reaped children, from
/// `/proc/<pid>/stat` (0 when it is gone).
fn cpu_secs(pid: u32) -> f64 {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { return 0.0 };
    // The fields after the command name: state (field 3) is index 0; utime, stime, cutime,
    // cstime are fields 14 to 17.
    let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else { return 0.0 };
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11..15).map(|v| v.iter().map(|t| t.parse::<u64>().unwrap_or(0)).sum()).unwrap_or(0);
    ticks as f64 / unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64
}

/// CPU seconds of a Postgres cluster: the postmaster (with the backends it has reaped) and every
/// live backend.
fn pg_cpu_secs(data: &std::path::Path) -> f64 {
    let Some(postmaster) = std::fs::read_to_string(data.join("postmaster.pid"))
        .ok()
        .and_then(|s| s.lines().next().and_then(|l| l.trim().parse::<u32>().ok()))
    else {
        return 0.0;
    };
    let mut total = cpu_secs(postmaster);
    for entry in std::fs::read_dir("/proc").into_iter().flatten().flatten() {
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<u32>().ok()) else { continue };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else { continue };
        let ppid = stat.rfind(')').and_then(|i| stat[i + 2..].split_whitespace().nth(1)?.parse::<u32>().ok());
        if ppid == Some(postmaster) {
            total += cpu_secs(pid);
        }
    }
    total
}

/// CPU seconds so far of: the relayer (while running), Postgres, Anvil and this bench.
#[derive(Clone, Copy, Default)]
struct Cpu {
    relayer: f64,
    postgres: f64,
    anvil: f64,
    bench: f64,
}

impl Cpu {
    fn minus(self, o: Cpu) -> Cpu {
        Cpu {
            relayer: self.relayer - o.relayer,
            postgres: self.postgres - o.postgres,
            anvil: self.anvil - o.anvil,
            bench: self.bench - o.bench,
        }
    }
    fn plus(self, o: Cpu) -> Cpu {
        Cpu {
            relayer: self.relayer + o.relayer,
            postgres: self.postgres + o.postgres,
            anvil: self.anvil + o.anvil,
            bench: self.bench + o.bench,
        }
    }
    /// Milliseconds per call, by process.
    fn per_call(self, calls: usize) -> String {
        let ms = |v: f64| v * 1000.0 / calls.max(1) as f64;
        format!(
            "relayer {:.2}, Postgres {:.2}, Anvil {:.2}, load generator {:.2}; total {:.2}",
            ms(self.relayer),
            ms(self.postgres),
            ms(self.anvil),
            ms(self.bench),
            ms(self.relayer + self.postgres + self.anvil + self.bench)
        )
    }
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

/// RPCs per method between two scrapes of the relayer's `/metrics`.
fn rpc_deltas(before: &HashMap<String, f64>, after: &HashMap<String, f64>) -> BTreeMap<String, f64> {
    let prefix = "streampay_rpc_request_duration_seconds_count";
    let mut out = BTreeMap::new();
    for (k, v) in after {
        if let Some(labels) = k.strip_prefix(prefix) {
            let method = labels.split("method=\"").nth(1).and_then(|m| m.split('"').next()).unwrap_or("?").to_string();
            *out.entry(method).or_insert(0.0) += v - before.get(k).copied().unwrap_or(0.0);
        }
    }
    out
}

/// Statements the relayer's role (`postgres`) has run, by statement: (calls, execution ms), from
/// pg_stat_statements.
async fn pg_statements(store: &Store) -> BTreeMap<String, (f64, f64)> {
    let rows: Vec<(String, i64, f64)> = sqlx::query_as(
        "SELECT query, sum(calls)::bigint, sum(total_exec_time)::float8 FROM pg_stat_statements
          WHERE userid = 'postgres'::regrole GROUP BY query",
    )
    .fetch_all(store.pool())
    .await
    .expect("read pg_stat_statements");
    rows.into_iter().map(|(q, n, ms)| (q.split_whitespace().collect::<Vec<_>>().join(" "), (n as f64, ms))).collect()
}

fn deltas(before: &BTreeMap<String, (f64, f64)>, after: &BTreeMap<String, (f64, f64)>) -> BTreeMap<String, (f64, f64)> {
    after
        .iter()
        .map(|(k, (n, ms))| {
            let (n0, ms0) = before.get(k).copied().unwrap_or_default();
            (k.clone(), (n - n0, ms - ms0))
        })
        .filter(|(_, (n, _))| *n > 0.0)
        .collect()
}

async fn mined_rows(store: &Store) -> i64 {
    sqlx::query_scalar("SELECT count(*) FROM relay_transactions WHERE status IN ('mined', 'confirmed')")
        .fetch_one(store.pool())
        .await
        .expect("count relay_transactions")
}

async fn wait_mined(store: &Store, want: i64, what: &str) {
    let deadline = Instant::now() + WAIT;
    loop {
        let rows = mined_rows(store).await;
        assert!(rows <= want, "{rows} relay_transactions mined, more than the {want} relays ({what})");
        if rows == want {
            return;
        }
        assert!(Instant::now() < deadline, "{what}: only {rows} of {want} relays mined within {WAIT:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

// --- statistics ----------------------------------------------------------------------------

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i].as_secs_f64() * 1000.0
}

fn median(xs: &[f64]) -> f64 {
    let mut v = xs.to_vec();
    v.sort_by(f64::total_cmp);
    let m = v.len() / 2;
    if v.len() % 2 == 1 { v[m] } else { (v[m - 1] + v[m]) / 2.0 }
}

/// `| requests | rate median (min–max) | offered | p50 | p99 |` cells for the measured rounds of
/// one run; p50/p99 from the pooled samples, p99 only from 2,000 or more.
fn cells(runs: &[Run]) -> String {
    let rates: Vec<f64> = runs.iter().map(|r| r.rate).collect();
    let lo = rates.iter().copied().fold(f64::INFINITY, f64::min);
    let hi = rates.iter().copied().fold(0.0, f64::max);
    let mut lat: Vec<Duration> = runs.iter().flat_map(|r| r.lat.iter().copied()).collect();
    lat.sort();
    let n: usize = runs.iter().map(|r| r.n).sum();
    let offered = runs.iter().filter_map(|r| r.offered).collect::<Vec<_>>();
    let offered = if offered.is_empty() { "—".into() } else { format!("{:.1}", median(&offered)) };
    let spread = if runs.len() > 1 { format!(" ({lo:.1}–{hi:.1})") } else { String::new() };
    let p99 = if lat.len() >= 2000 {
        format!("{:.1}", percentile(&lat, 0.99))
    } else {
        format!("({:.1}, n < 2,000)", percentile(&lat, 0.99))
    };
    format!("{n} | {:.1}{spread} | {offered} | {:.1} | {p99}", median(&rates), percentile(&lat, 0.5))
}

// --- main ----------------------------------------------------------------------------------

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = args();
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let anvil = Anvil::new().path(root.join(".tools/bin/anvil")).try_spawn()?;
    let chain_id = anvil.chain_id();
    let deployer: PrivateKeySigner = anvil.keys()[0].clone().into();
    let admin = ProviderBuilder::new().wallet(deployer).connect_http(anvil.endpoint_url()).erased();
    let provider = ProviderBuilder::new().connect_http(anvil.endpoint_url()).erased();
    let token = *MockToken::deploy(&admin, "Mock USD Coin".into(), "mUSDC".into()).await?.address();
    let contract = *StreamPay::deploy(&admin, token, PERMIT2, U256::from(86_400u64)).await?.address();
    // The relayer's sponsor pool: Anvil's accounts 1, 2, 4, 5, … (0 deploys, 3 is the ceiling's).
    let relayer_keys: Vec<PrivateKeySigner> =
        [1, 2, 4, 5, 6, 7, 8, 9].into_iter().take(args.sponsors).map(|i| anvil.keys()[i].clone().into()).collect();
    let relayer_addresses: Vec<Address> = relayer_keys.iter().map(|k| k.address()).collect();
    // A key the relayer is never given.
    let ceiling_key: PrivateKeySigner = anvil.keys()[3].clone().into();

    let dir = std::env::temp_dir().join(format!("streampay-bench-relay-{}", std::process::id()));
    let port = free_port()?;
    let pg_dir = dir.join("pg");
    let pg_data = pg_dir.join("data");
    let cluster = tokio::task::spawn_blocking(move || PgCluster::start(&pg_dir, port, true)).await??;
    cluster.ensure_database("relay").await?;
    let db_url = cluster.url("relay");
    let store = Store::connect(&db_url, 4).await?;
    store.migrate().await?;
    // Postgres statements per relay: pg_stat_statements (the cluster preloads it), counted for the
    // relayer's role only; the bench itself reads as the role `bench`.
    sqlx::query("CREATE ROLE bench LOGIN SUPERUSER").execute(store.pool()).await?;
    store.pool().close().await;
    let store = Store::connect(&db_url.replacen("postgres://postgres@", "postgres://bench@", 1), 4).await?;
    sqlx::query("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
        .execute(store.pool())
        .await
        .expect("pg_stat_statements: the bench needs a Postgres that ships it");
    let key = store.create_api_key("bench", &relayer_addresses, true).await?;

    let deployments = dir.join("deployment.json");
    std::fs::write(
        &deployments,
        json!({"chainId": chain_id, "rpcUrl": anvil.endpoint(), "deployments": [{
            "name": "USDC", "address": contract, "token": token, "tokenDecimals": 6, "startBlock": 0}]})
        .to_string(),
    )?;
    let listen_port = free_port()?;
    let poll_ms = "10";
    let http = HttpClient {
        http: reqwest::Client::builder().pool_max_idle_per_host(1024).build()?,
        base: format!("http://127.0.0.1:{listen_port}"),
        api_key: key.key,
    };
    let cmd = {
        let (dir, db_url, deployments): (PathBuf, String, PathBuf) = (dir.clone(), db_url.clone(), deployments.clone());
        let sponsor = relayer_keys
            .iter()
            .map(|k| format!("0x{}", alloy::hex::encode(k.to_bytes())))
            .collect::<Vec<_>>()
            .join(",");
        move || {
            let mut c = Command::new(env!("CARGO_BIN_EXE_streampay"));
            c.arg("serve")
                .current_dir(&dir)
                .env("STREAMPAY_LISTEN", format!("127.0.0.1:{listen_port}"))
                .env("STREAMPAY_DATABASE_URL", &db_url)
                .env("STREAMPAY_DATABASE_MAX_CONNECTIONS", "20")
                .env("STREAMPAY_DEPLOYMENTS_FILE", &deployments)
                .env("STREAMPAY_SPONSOR_KEYS", &sponsor)
                .env("STREAMPAY_PIPELINE_POLL_INTERVAL_MS", poll_ms)
                .env("RUST_LOG", "warn")
                .stdout(Stdio::null());
            c
        }
    };
    let mut relayer = Relayer { cmd: Box::new(cmd), child: None, http: http.clone(), peak_rss_mib: 0.0 };
    relayer.start().await;

    // --- users, in the order they are consumed: warm-ups, then per round C (closed, max) and
    //     R (closed, open sync, open accept), then chain-bound C (1.2×), R (1.2×), R sync (0.5×)
    let (n, on, w, cn) = (args.n, args.open_n, args.n.min(100), args.chain_n);
    let mut plan: Vec<(bool, usize)> = vec![(true, w), (false, w)]; // (ceiling?, count)
    for _ in 0..args.rounds {
        plan.extend([(true, n), (true, n), (false, n), (false, on), (false, on)]);
    }
    if cn > 0 {
        plan.extend([(true, 1), (true, cn), (false, cn), (false, args.chain_sync_n)]);
    }
    let total: usize = plan.iter().map(|p| p.1).sum();
    let t_setup = Instant::now();
    eprintln!("setup: minting to {total} users");
    let users: Vec<PrivateKeySigner> = (0..total).map(|_| PrivateKeySigner::random()).collect();
    let tokens = U256::from(10u64).pow(U256::from(6u64));
    // Pre-signed mints from the deployer, 256 at a time (a pool of thousands stalls Anvil).
    let deployer_key: PrivateKeySigner = anvil.keys()[0].clone().into();
    let mut mint_nonce = provider.get_transaction_count(deployer_key.address()).await?;
    for chunk in users.chunks(256) {
        let raws: Vec<Bytes> = chunk
            .iter()
            .map(|u| {
                let mut tx = TxEip1559 {
                    chain_id,
                    nonce: mint_nonce,
                    gas_limit: 100_000,
                    max_fee_per_gas: CEILING_MAX_FEE,
                    max_priority_fee_per_gas: 1_000_000_000,
                    to: TxKind::Call(token),
                    value: U256::ZERO,
                    access_list: Default::default(),
                    input: MockToken::mintCall { to: u.address(), amount: tokens }.abi_encode().into(),
                };
                mint_nonce += 1;
                let sig = deployer_key.sign_transaction_sync(&mut tx).expect("sign");
                TxEnvelope::from(tx.into_signed(sig)).encoded_2718().into()
            })
            .collect();
        // In nonce order, one at a time: no nonce gaps in the pool.
        for raw in raws {
            let _ = provider.send_raw_transaction(&raw).await.expect("mint");
        }
        let deadline = Instant::now() + WAIT;
        while provider.get_transaction_count(deployer_key.address()).await? < mint_nonce {
            assert!(Instant::now() < deadline, "mints not mined within {WAIT:?}");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
    eprintln!("setup: building and signing {total} calls ({:.0} s)", t_setup.elapsed().as_secs_f64());
    let mut groups: Vec<Vec<Signed>> = Vec::new();
    let mut at = 0;
    for (ceiling, count) in &plan {
        let over = ceiling.then(|| ceiling_key.address());
        let g: Vec<Signed> = stream::iter(users[at..at + count].iter().enumerate())
            .map(|(i, u)| build_signed(&http, u, relayer_addresses[i % relayer_addresses.len()], over))
            .buffered(8)
            .collect()
            .await;
        at += count;
        groups.push(g);
    }
    relayer.stop();
    eprintln!("setup done ({:.0} s)", t_setup.elapsed().as_secs_f64());
    // Pre-sign every ceiling transaction, nonces in the order they will be sent.
    let mut ceiling_nonce = provider.get_transaction_count(ceiling_key.address()).await?;
    let ceiling_start_nonce = ceiling_nonce;
    let mut txs: Vec<Option<Vec<Tx>>> = Vec::new();
    for ((ceiling, _), g) in plan.iter().zip(&groups) {
        txs.push(ceiling.then(|| {
            g.iter()
                .map(|s| {
                    ceiling_nonce += 1;
                    ceiling_tx(s, &ceiling_key, chain_id, ceiling_nonce - 1, token, contract)
                })
                .collect()
        }));
    }
    let mut groups = groups.into_iter().zip(txs);
    let mut next = || groups.next().expect("plan");

    let mut relays: i64 = 0;
    // The sum of the pool's nonces: each relay is one sponsor transaction.
    let pool_nonce = |p: DynProvider, pool: Vec<Address>| async move {
        let mut sum = 0;
        for a in pool {
            sum += p.get_transaction_count(a).await.expect("nonce");
        }
        sum
    };
    // The relayer's transactions on record: a call sent alone, or a bundle of several.
    let transactions = |store: Store| async move {
        let n: i64 = sqlx::query_scalar("SELECT count(DISTINCT coalesce(bundle_id, id)) FROM relay_transactions")
            .fetch_one(store.pool())
            .await
            .expect("count the relayer's transactions");
        n as u64
    };
    let mut relayer_nonce =
        (pool_nonce(provider.clone(), relayer_addresses.clone()).await, transactions(store.clone()).await);
    // Each sponsor transaction on record used one nonce of the pool, and no other transaction did;
    // a round's `count` relays went out in at most `count` transactions.
    let check_relayer_nonce = |p: DynProvider, before: (u64, u64), count: usize| {
        let pool = relayer_addresses.clone();
        let store = store.clone();
        async move {
            let now = (pool_nonce(p, pool).await, transactions(store).await);
            let (nonces, txs) = (now.0 - before.0, now.1 - before.1);
            assert_eq!(nonces, txs, "relayer sponsor nonces rose by {nonces}, transactions on record {txs}");
            assert!(txs >= 1 && txs <= count as u64, "{count} relays in {txs} transactions");
            now
        }
    };

    // --- warm-up (discarded)
    eprintln!("warm-up");
    {
        let watcher = Watcher::start(provider.clone()).await;
        ceiling_closed(&provider, &watcher, next().1.unwrap(), args.concurrency).await;
        watcher.finish().await;
        relayer.start().await;
        let g = next().0;
        relayer_closed(&http, &g, args.concurrency).await;
        relays += g.len() as i64;
        wait_mined(&store, relays, "warm-up").await;
        relayer_nonce = check_relayer_nonce(provider.clone(), relayer_nonce, g.len()).await;
        relayer.stop();
    }

    // --- alternating rounds
    let (mut c_closed, mut c_max, mut r_closed, mut r_open, mut r_accept) = (vec![], vec![], vec![], vec![], vec![]);
    let mut rpc: Vec<BTreeMap<String, f64>> = Vec::new();
    let mut rpc_relays = 0usize;
    let mut pg: Vec<BTreeMap<String, (f64, f64)>> = Vec::new();
    let anvil_pid = anvil.child().id();
    let cpu_now = |relayer: Option<u32>| Cpu {
        relayer: relayer.map(cpu_secs).unwrap_or(0.0),
        postgres: pg_cpu_secs(&pg_data),
        anvil: cpu_secs(anvil_pid),
        bench: cpu_secs(std::process::id()),
    };
    let (mut cpu_c, mut cpu_r, mut cpu_c_n) = (Cpu::default(), Cpu::default(), 0usize);
    for round in 1..=args.rounds {
        eprintln!("round {round}: ceiling");
        let c0 = cpu_now(None);
        let watcher = Watcher::start(provider.clone()).await;
        let closed = ceiling_closed(&provider, &watcher, next().1.unwrap(), args.concurrency).await;
        let max = ceiling_max(&provider, &watcher, next().1.unwrap()).await;
        watcher.finish().await;
        cpu_c = cpu_c.plus(cpu_now(None).minus(c0));
        cpu_c_n += closed.n + max.n;
        let half = closed.rate / 2.0;
        eprintln!("  closed {:.1}/s, max {:.1}/s", closed.rate, max.rate);
        c_closed.push(closed);
        c_max.push(max);

        eprintln!("round {round}: relayer (open loops at {half:.1}/s)");
        relayer.start().await;
        let m0 = http.metrics().await;
        let pg0 = pg_statements(&store).await;
        let c0 = cpu_now(relayer.pid());
        let (g1, g2, g3) = (next().0, next().0, next().0);
        let closed = relayer_closed(&http, &g1, args.concurrency).await;
        let open = relayer_paced(&http, &g2, half, false).await;
        let accept = relayer_paced(&http, &g3, half, true).await;
        let count = g1.len() + g2.len() + g3.len();
        relays += count as i64;
        wait_mined(&store, relays, "accepted executes").await;
        let m1 = http.metrics().await;
        cpu_r = cpu_r.plus(cpu_now(relayer.pid()).minus(c0));
        pg.push(deltas(&pg0, &pg_statements(&store).await));
        relayer_nonce = check_relayer_nonce(provider.clone(), relayer_nonce, count).await;
        relayer.stop();
        eprintln!("  closed {:.1}/s, open {:.1}/s, accept {:.1}/s", closed.rate, open.rate, accept.rate);
        rpc.push(rpc_deltas(&m0, &m1));
        rpc_relays += count;
        r_closed.push(closed);
        r_open.push(open);
        r_accept.push(accept);
    }

    // --- chain-bound variant: 1 s blocks, a block gas limit of CALLS_PER_BLOCK calls
    let mut chain: Option<(u64, u64, Run, (usize, f64, Vec<usize>), Run, (usize, f64, Vec<usize>), Run)> = None;
    if cn > 0 {
        eprintln!("chain-bound: measuring one call");
        let one = next().1.unwrap();
        let watcher = Watcher::start(provider.clone()).await;
        ceiling_closed(&provider, &watcher, one.clone(), 1).await;
        watcher.finish().await;
        let gas = provider.get_transaction_receipt(one[0].hash).await?.expect("receipt").gas_used;
        let limit = gas * CALLS_PER_BLOCK;
        let latest = provider.get_block_by_number(BlockNumberOrTag::Latest).await?.expect("latest block");
        let base_fee = latest.header.base_fee_per_gas.expect("base fee");
        provider.raw_request::<_, Value>("evm_setBlockGasLimit".into(), (U256::from(limit),)).await?;
        provider.raw_request::<_, Value>("evm_setAutomine".into(), (false,)).await?;
        provider.raw_request::<_, Value>("evm_setIntervalMining".into(), (1u64,)).await?;
        let capacity = CALLS_PER_BLOCK as f64; // calls per second with 1 s blocks
        let reset_fee = || {
            let p = provider.clone();
            async move {
                let _: Value = p
                    .raw_request("anvil_setNextBlockBaseFeePerGas".into(), (U256::from(base_fee),))
                    .await
                    .expect("fee");
            }
        };
        eprintln!("chain-bound: {gas} gas per call, block gas limit {limit}; ceiling at {:.0}/s", 1.2 * capacity);
        reset_fee().await;
        let watcher = Watcher::start(provider.clone()).await;
        let start = Instant::now();
        let c = ceiling_paced(&provider, &watcher, next().1.unwrap(), 1.2 * capacity).await;
        let c_inc = included_rate(&watcher.finish().await, &[ceiling_key.address()], start);
        assert_eq!(c_inc.0, cn, "chain-bound ceiling: included calls != sent");

        eprintln!("chain-bound: relayer at {:.0}/s, then sync at {:.0}/s", 1.2 * capacity, 0.5 * capacity);
        relayer.start().await;
        reset_fee().await;
        let watcher = Watcher::start(provider.clone()).await;
        let start = Instant::now();
        let g = next().0;
        let r = relayer_paced(&http, &g, 1.2 * capacity, false).await;
        let r_inc = included_rate(&watcher.finish().await, &relayer_addresses, start);
        assert_eq!(r_inc.0, cn, "chain-bound relayer: included calls != relays");
        relays += g.len() as i64;
        wait_mined(&store, relays, "chain-bound relays").await;
        relayer_nonce = check_relayer_nonce(provider.clone(), relayer_nonce, g.len()).await;
        reset_fee().await;
        let g2 = next().0;
        let sync = relayer_paced(&http, &g2, 0.5 * capacity, false).await;
        relays += g2.len() as i64;
        wait_mined(&store, relays, "chain-bound sync relays").await;
        check_relayer_nonce(provider.clone(), relayer_nonce, g2.len()).await;
        relayer.stop();
        chain = Some((gas, limit, c, c_inc, r, r_inc, sync));
        provider.raw_request::<_, Value>("evm_setIntervalMining".into(), (0u64,)).await?;
        provider.raw_request::<_, Value>("evm_setAutomine".into(), (true,)).await?;
    }

    // --- exactly once
    eprintln!("checking exactly-once");
    assert_eq!(mined_rows(&store).await, relays, "relay_transactions mined != relays");
    let ceiling_sent = provider.get_transaction_count(ceiling_key.address()).await? - ceiling_start_nonce;
    assert_eq!(ceiling_sent, ceiling_nonce - ceiling_start_nonce, "ceiling key nonce != ceiling transactions");
    let sp = StreamPay::new(contract, &provider);
    let tk = MockToken::new(token, &provider);
    let scale = U256::from(10u64).pow(U256::from(12u64));
    let checked: usize = stream::iter(&users)
        .map(|u| {
            let (sp, tk) = (&sp, &tk);
            async move {
                let a = u.address();
                let b = sp.balanceOf(a).call().await.expect("balanceOf");
                assert_eq!(b, tokens * scale, "user {a}: StreamPay balance {b}, not exactly one deposit");
                let t = tk.balanceOf(a).call().await.expect("token balanceOf");
                assert_eq!(t, U256::ZERO, "user {a}: token balance {t} left");
                1
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .len();
    assert_eq!(checked, users.len());

    let peak_rss = relayer.peak_rss_mib;
    // Bundles: how the relayed calls went out, and the gas each was charged (its share of its
    // transaction's gas; a call sent alone is charged its transaction's gas).
    let sizes: Vec<(i32, i64, f64)> = sqlx::query_as(
        "SELECT coalesce(b.size, 1), count(*), avg(t.gas_used)::float8
         FROM relay_transactions t LEFT JOIN relay_bundles b ON b.leader_id = t.bundle_id
         WHERE t.gas_used IS NOT NULL GROUP BY 1 ORDER BY 1",
    )
    .fetch_all(store.pool())
    .await?;
    drop(relayer);
    drop(cluster);
    let _ = std::fs::remove_dir_all(&dir);

    // --- report
    let cpus = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let cpu_model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|c| {
            c.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    let commit = Command::new("git")
        .args(["rev-parse", "--short", "HEAD"])
        .current_dir(&root)
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let date = Command::new("date")
        .args(["-u", "+%Y-%m-%d %H:%M UTC"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let anvil_version = Command::new(root.join(".tools/bin/anvil"))
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).lines().next().unwrap_or("").to_string())
        .unwrap_or_default();
    let c = args.concurrency;
    println!("Machine: {cpus} CPUs ({cpu_model}); {anvil_version}; date {date}; commit {commit}.");
    println!("Command: `cargo bench --bench relay -- {}`", args.argv);
    println!();
    println!(
        "Automine Anvil, {} alternating rounds C R (after a discarded warm-up of {w} each). Rates: median of the rounds (min–max); p50/p99 over the pooled requests of all rounds (a p99 over fewer than 2,000 is shown in parentheses).",
        args.rounds
    );
    println!();
    println!("| run | requests | calls/s median (spread) | offered /s | p50 ms | p99 ms |");
    println!("|---|---:|---:|---:|---:|---:|");
    println!("| ceiling: closed loop, {c} senders, inclusion per block | {} |", cells(&c_closed));
    println!("| ceiling: open-loop maximum, 64 sends in flight | {} |", cells(&c_max));
    println!("| relayer: closed loop, {c} clients, execute → 200 (mined) | {} |", cells(&r_closed));
    println!("| relayer: open loop at half the ceiling, execute → 200 (mined) | {} |", cells(&r_open));
    println!("| relayer: accept path at half the ceiling, `Prefer: respond-async` → 202 | {} |", cells(&r_accept));
    println!();
    let ratio = |r: &[Run], c: &[Run]| {
        median(&r.iter().map(|r| r.rate).collect::<Vec<_>>()) / median(&c.iter().map(|r| r.rate).collect::<Vec<_>>())
    };
    println!(
        "Relayer closed / ceiling closed: **{:.2}**; relayer closed / ceiling open-loop maximum: **{:.2}**.",
        ratio(&r_closed, &c_closed),
        ratio(&r_closed, &c_max)
    );
    let overloaded = r_open.iter().filter(|r| r.rate < 0.95 * r.offered.unwrap_or(0.0)).count();
    println!(
        "Open-loop rounds where the relayer achieved < 0.95 × offered (overload: latency is queueing): {overloaded} of {}.",
        r_open.len()
    );
    println!();
    println!(
        "Per relay, from the relayer's own `/metrics` (deltas over the {} measured relayer rounds, {rpc_relays} relays, background loops included):",
        args.rounds
    );
    let mut total_rpc: BTreeMap<String, f64> = BTreeMap::new();
    for r in &rpc {
        for (m, v) in r {
            *total_rpc.entry(m.clone()).or_insert(0.0) += v;
        }
    }
    let per = |v: f64| v / rpc_relays as f64;
    let all: f64 = total_rpc.values().sum();
    let mut top: Vec<(&String, &f64)> = total_rpc.iter().collect();
    top.sort_by(|a, b| b.1.total_cmp(a.1));
    let per_round: Vec<String> = rpc
        .iter()
        .zip(&r_closed)
        .zip(r_open.iter().zip(&r_accept))
        .map(|((m, a), (b, d))| format!("{:.2}", m.values().sum::<f64>() / (a.n + b.n + d.n) as f64))
        .collect();
    println!();
    println!("- JSON-RPC calls: **{:.2}** per relay (rounds: {})", per(all), per_round.join(", "));
    for (m, v) in top.iter().take(8) {
        println!("  - `{m}`: {:.2}", per(**v));
    }
    let evm = ["eth_estimateGas", "eth_call", "eth_simulateV1"]
        .iter()
        .map(|m| total_rpc.get(*m).copied().unwrap_or(0.0))
        .sum::<f64>();
    println!(
        "- EVM runs: **{:.2}** per relay, approximated as the count of `eth_estimateGas` + `eth_call` + `eth_simulateV1` RPCs (an `eth_estimateGas` itself runs the EVM several times inside Anvil; an `eth_simulateV1` runs the transaction once, plus one or two `view` reads)",
        per(evm)
    );
    let pg_rounds: Vec<String> = pg
        .iter()
        .zip(&r_closed)
        .zip(r_open.iter().zip(&r_accept))
        .map(|((p, a), (b, d))| format!("{:.2}", p.values().map(|v| v.0).sum::<f64>() / (a.n + b.n + d.n) as f64))
        .collect();
    let mut total_pg: BTreeMap<String, (f64, f64)> = BTreeMap::new();
    for r in &pg {
        for (q, (n, ms)) in r {
            let e = total_pg.entry(q.clone()).or_default();
            e.0 += n;
            e.1 += ms;
        }
    }
    println!(
        "- Postgres statements: **{:.2}** per relay (rounds: {}), {:.2} ms of execution per relay, from `pg_stat_statements` for the relayer's role (BEGIN and COMMIT count; with sqlx's cached prepared statements each is one round trip). The costliest (statements per relay, execution ms per relay):",
        per(total_pg.values().map(|v| v.0).sum()),
        pg_rounds.join(", "),
        per(total_pg.values().map(|v| v.1).sum())
    );
    let mut top: Vec<(&String, &(f64, f64))> = total_pg.iter().collect();
    top.sort_by(|a, b| b.1.1.total_cmp(&a.1.1));
    for (q, (n, ms)) in top.iter().take(10) {
        let q: String = q.chars().take(90).collect();
        println!("  - {:.2}, {:.3} ms: `{}…`", per(*n), per(*ms), q.replace('`', "'"));
    }
    println!("  The most frequent (statements per relay, execution ms per relay):");
    top.sort_by(|a, b| b.1.0.total_cmp(&a.1.0));
    for (q, (n, ms)) in top.iter().take(20) {
        let q: String = q.chars().take(90).collect();
        println!("  - {:.2}, {:.3} ms: `{}…`", per(*n), per(*ms), q.replace('`', "'"));
    }
    println!();
    if let Some((gas, limit, c, (c_n, c_rate, c_blocks), r, (r_n, r_rate, r_blocks), sync)) = &chain {
        println!(
            "Chain-bound: the same Anvil switched to 1 s interval mining with a block gas limit of {limit} ({CALLS_PER_BLOCK} calls of {gas} gas: capacity {CALLS_PER_BLOCK} calls/s); base fee reset before each run; one run each. Included rate in steady state, from the per-block watcher: the calls of the blocks after the first and before the last, over the time from the first block to the one before the last (the 0.5 × run: answers over time)."
        );
        println!();
        println!("| run | requests | included calls/s (steady state) | offered /s | p50 ms | p99 ms |");
        println!("|---|---:|---:|---:|---:|---:|");
        let row = |name: &str, run: &Run, inc: Option<(usize, f64)>| {
            let mut lat = run.lat.clone();
            lat.sort();
            let p99 = if lat.len() >= 2000 {
                format!("{:.1}", percentile(&lat, 0.99))
            } else {
                format!("({:.1}, n < 2,000)", percentile(&lat, 0.99))
            };
            let rate = inc.map(|i| i.1).unwrap_or(run.rate);
            println!(
                "| {name} | {} | {rate:.1} | {:.1} | {:.1} | {p99} |",
                run.n,
                run.offered.unwrap_or(f64::NAN),
                percentile(&lat, 0.5)
            );
        };
        row("ceiling: open loop at 1.2 × capacity, send → included", c, Some((*c_n, *c_rate)));
        row("relayer: open loop at 1.2 × capacity, execute → 200 (mined)", r, Some((*r_n, *r_rate)));
        row("relayer: open loop at 0.5 × capacity, execute → 200 (mined)", sync, None);
        println!();
        println!("Relayer / ceiling included rate, chain-bound: **{:.2}**.", r_rate / c_rate);
        println!();
        println!("Calls per block, ceiling: {c_blocks:?}; relayer: {r_blocks:?}.");
        println!();
    }
    println!(
        "CPU milliseconds per call, by process (utime + stime from `/proc`, over the measured automine rounds): ceiling {}; relayer rounds {}.",
        cpu_c.per_call(cpu_c_n),
        cpu_r.per_call(rpc_relays)
    );
    println!();
    println!(
        "Relayed calls by the size of the transaction they went out in (all rounds, warm-up included), with the gas charged per call:"
    );
    println!();
    println!("| calls per transaction | calls | transactions | gas per call (mean) |");
    println!("|---:|---:|---:|---:|");
    for (size, calls, gas) in &sizes {
        println!("| {size} | {calls} | {} | {gas:.0} |", calls / i64::from(*size).max(1));
    }
    let (calls, gas): (i64, f64) = sizes.iter().fold((0, 0.0), |(n, g), (_, c, m)| (n + c, g + *c as f64 * m));
    let alone = sizes.iter().find(|(s, _, _)| *s == 1).map(|(_, _, g)| *g);
    println!();
    match alone {
        Some(a) => println!(
            "Mean gas per relayed call: {:.0}, {:.0}% below a call sent alone ({a:.0}).",
            gas / calls.max(1) as f64,
            100.0 * (1.0 - gas / calls.max(1) as f64 / a)
        ),
        None => println!("Mean gas per relayed call: {:.0}; no call went alone.", gas / calls.max(1) as f64),
    }
    println!();
    println!("Relayer peak RSS (VmHWM, max over its runs): {peak_rss:.1} MiB.");
    println!(
        "Exactly once (asserted): {relays} relays each answered once (200, or 202 on the accept path) and mined once ({relays} rows mined, the pool's nonces rose by exactly the relayer's transactions on record of each round); {} ceiling transactions each included once and successful; all {} users hold exactly one deposit.",
        ceiling_nonce - ceiling_start_nonce,
        users.len()
    );
    Ok(())
}
