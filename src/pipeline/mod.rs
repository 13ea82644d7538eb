//! Sponsor accounts and the persistent queue of transactions they send (SPEC §5).
//!
//! - [`Sponsor`]: one gas-paying key; signs calls and cancellations.
//! - [`Sponsors`]: the configured keys and, once started, the [`Pipeline`].
//! - [`Pipeline`]: `enqueue` (the API's side) and one worker task per sponsor
//!   ([`worker`]) that broadcasts, tracks receipts, bumps fees and repairs nonces.
//! - [`fault`]: the table that classifies a node's refusal; [`fees`]: EIP-1559 pricing and bumps.
//! - `blocks`: the latest block and blocks' receipts, read once per chain for every worker.
//! - `finality`: mined rows re-checked against the chain until they are final (`confirmed`).
//!
//! The queue lives in Postgres (`relay_transactions`, `tx_attempts`, `sponsor_accounts`). An
//! accepted call is a row with its sponsor nonce allocated and its transaction signed in one
//! database transaction, so a crash at any point loses nothing: on start the worker finds the
//! row and sends the same bytes, or finds a receipt for one of its recorded hashes. Only the
//! process holding a sponsor's lease broadcasts for it; any process may enqueue. The holder
//! counts the sponsor's nonces in memory and writes a batch in one statement fenced by the lease
//! and the database counter; others take them from the counter under its row lock.

mod blocks;
pub mod fault;
pub mod fees;
mod finality;
mod worker;

use std::{
    collections::{HashMap, VecDeque},
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering},
    },
    time::{Duration, Instant},
};

use alloy::{
    consensus::{SignableTransaction, TxEip1559, TxEnvelope},
    eips::eip2718::Encodable2718,
    network::TxSignerSync,
    primitives::{Address, B256, Bytes, TxKind, U256},
    providers::{DynProvider, Provider},
    signers::local::PrivateKeySigner,
};
use anyhow::Context;
use tokio::sync::{Notify, oneshot};
use tokio_util::sync::CancellationToken;

use crate::{
    secret::Secret,
    store::{AttemptKind, BundleTx, Lease, NewTransaction, SignedAttempt, Store},
};
pub use fees::Fees;
pub use finality::DEFAULT_FINALITY_DEPTH;

/// Gas of a plain transfer: what a cancellation (0 value to the sponsor itself) needs.
const CANCEL_GAS: u64 = 21_000;

/// One account that pays gas for relayed calls.
#[derive(Debug)]
pub struct Sponsor {
    address: Address,
    signer: PrivateKeySigner,
    chain_id: u64,
}

impl Sponsor {
    pub fn new(signer: PrivateKeySigner, chain_id: u64) -> Self {
        Self { address: signer.address(), signer, chain_id }
    }

    pub fn address(&self) -> Address {
        self.address
    }

    fn sign(
        &self,
        nonce: u64,
        to: Address,
        input: Bytes,
        gas_limit: u64,
        fees: Fees,
        kind: AttemptKind,
    ) -> anyhow::Result<SignedAttempt> {
        let mut tx = TxEip1559 {
            chain_id: self.chain_id,
            nonce,
            gas_limit,
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
            to: TxKind::Call(to),
            value: U256::ZERO,
            access_list: Default::default(),
            input,
        };
        let signature = self.signer.sign_transaction_sync(&mut tx).context("Failed to sign the transaction")?;
        let envelope = TxEnvelope::from(tx.into_signed(signature));
        Ok(SignedAttempt {
            hash: *envelope.tx_hash(),
            raw: envelope.encoded_2718().into(),
            kind,
            max_fee_per_gas: fees.max_fee_per_gas,
            max_priority_fee_per_gas: fees.max_priority_fee_per_gas,
        })
    }

    /// Signs the relayed call `input` to `to` at `nonce`.
    pub fn sign_call(
        &self,
        nonce: u64,
        to: Address,
        input: Bytes,
        gas_limit: u64,
        fees: Fees,
    ) -> anyhow::Result<SignedAttempt> {
        self.sign(nonce, to, input, gas_limit, fees, AttemptKind::Call)
    }

    /// Signs a cancellation: a 0-value transfer to itself that fills `nonce`.
    pub fn sign_cancel(&self, nonce: u64, fees: Fees) -> anyhow::Result<SignedAttempt> {
        self.sign(nonce, self.address, Bytes::new(), CANCEL_GAS, fees, AttemptKind::Cancel)
    }
}

/// Tunables of the sending pipeline (config section `[pipeline]`).
#[derive(Debug, Clone)]
pub struct PipelineSettings {
    /// How often each sponsor's worker looks at the chain (nonce, receipts).
    pub poll_interval: Duration,
    /// The finality depth: blocks a receipt must be under (the including block counts as 1)
    /// before a row is `confirmed`, i.e. final. Until then the row is `mined` and its block is
    /// re-checked; a reorg puts it back in the queue. A chain's `finality_depth` sets it for that
    /// chain; [`DEFAULT_FINALITY_DEPTH`] (64) by default.
    pub confirmations: u64,
    /// A submitted transaction is sent again (same bytes) after this long without a receipt, in
    /// case the node dropped it.
    pub rebroadcast_after: Duration,
    /// A transaction not mined after this long is replaced at the same nonce with higher fees.
    pub bump_after: Duration,
    /// Highest max fee per gas (wei) any transaction is signed with: first sends, bumps and
    /// cancellations. `None`: no cap.
    pub max_fee_cap: Option<u128>,
    /// Lets the replacement of the transaction that holds the sponsor's queue up (the lowest
    /// open nonce) go above `max_fee_cap` by the minimum bump, so one stuck nonce cannot stall
    /// everything behind it while the market sits above the cap. Off by default: the cap holds.
    pub unjam_above_cap: bool,
    /// How long a process's lease on a sponsor's queue lasts without renewal.
    pub lease_ttl: Duration,
    /// Most users' calls sent in one transaction (the contract's `bundle`): calls to one
    /// contract queued together for one sponsor go out as one bundle (docs/throughput.md §3).
    /// 1: every call is sent alone.
    pub bundle_max_calls: usize,
    /// Most gas one bundle may be signed for (the sum of its calls' gas limits): keep it well
    /// under the chain's block gas limit.
    pub bundle_max_gas: u64,
    /// How long the writer of a sponsor's batch waits for executes still on their way to the
    /// sponsor's queue (simulated, being admitted), so that they share the bundle. Zero: no wait.
    pub bundle_linger: Duration,
    /// How long after the sponsor's previous transaction was sent the writer of its next batch
    /// may wait for that transaction to be mined, so that the calls queued meanwhile share the
    /// next bundle: only while the chain makes a block at least every tenth of this (an
    /// automining node under load; docs/throughput.md §3). Zero: no wait.
    pub bundle_hold: Duration,
}

impl PipelineSettings {
    /// How long "the nonce is used but none of the row's hashes has a receipt" must hold before
    /// the call is treated as displaced by someone else's transaction.
    pub fn drift_grace(&self) -> Duration {
        (self.poll_interval * 10).max(Duration::from_secs(1))
    }

    /// The longest one worker tick may run: a third of the lease, so a tick stalled on the node
    /// or the database ends (and its writes stop) long before another process may take over.
    pub fn tick_timeout(&self) -> Duration {
        (self.lease_ttl / 3).max(Duration::from_millis(500))
    }
}

impl Default for PipelineSettings {
    fn default() -> Self {
        Self {
            poll_interval: Duration::from_millis(100),
            confirmations: DEFAULT_FINALITY_DEPTH,
            rebroadcast_after: Duration::from_secs(3),
            bump_after: Duration::from_secs(30),
            max_fee_cap: None,
            unjam_above_cap: false,
            lease_ttl: Duration::from_secs(10),
            bundle_max_calls: 16,
            bundle_max_gas: 8_000_000,
            bundle_linger: Duration::from_millis(10),
            bundle_hold: Duration::from_millis(1000),
        }
    }
}

/// The configured sponsors of one chain, by address, and how busy each is.
#[derive(Debug, Clone, Default)]
pub struct Sponsors {
    by_address: HashMap<Address, Arc<Sponsor>>,
    order: Vec<Address>,
    settings: PipelineSettings,
    /// Kept current by the running [`Pipeline`] (see [`Pipeline::run`]).
    load: Arc<Mutex<Load>>,
    /// EIP-712 domains of permit tokens, read once (every deposit execute needs one).
    permit_domains: Arc<Mutex<HashMap<Address, crate::chain::eip712::Domain>>>,
}

/// How busy each sponsor is, for the pool: its transactions not yet mined (counted in the
/// database by the running pipeline, so across replicas) plus the requests this process sent its
/// way since that count.
#[derive(Debug, Default)]
struct Load {
    open: HashMap<Address, u64>,
    picks: HashMap<Address, u64>,
}

impl Sponsors {
    pub fn from_keys(keys: &[Secret], chain_id: u64) -> anyhow::Result<Self> {
        let signers = keys
            .iter()
            .enumerate()
            .map(|(i, k)| {
                k.expose()
                    .trim()
                    .parse::<PrivateKeySigner>()
                    .with_context(|| format!("Sponsor key #{i} is not a private key"))
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Ok(Self::from_signers(signers, chain_id))
    }

    pub fn from_signers(signers: Vec<PrivateKeySigner>, chain_id: u64) -> Self {
        let mut s = Self::default();
        for signer in signers {
            let sponsor = Arc::new(Sponsor::new(signer, chain_id));
            if s.by_address.insert(sponsor.address(), sponsor.clone()).is_none() {
                s.order.push(sponsor.address());
            }
        }
        s
    }

    /// Sets the pipeline's tunables (before it starts).
    pub fn with_settings(mut self, settings: PipelineSettings) -> Self {
        self.settings = settings;
        self
    }

    pub fn get(&self, address: &Address) -> Option<Arc<Sponsor>> {
        self.by_address.get(address).cloned()
    }

    pub fn addresses(&self) -> &[Address] {
        &self.order
    }

    /// The configured sponsors among `allowed`, least busy first (ties keep `allowed`'s order):
    /// a key with several sponsors spreads its requests over them, so one busy key does not
    /// queue everyone.
    pub fn by_load(&self, allowed: &[Address]) -> Vec<Arc<Sponsor>> {
        let load = self.load.lock().unwrap_or_else(|e| e.into_inner());
        let busy = |a: &Address| load.open.get(a).copied().unwrap_or(0) + load.picks.get(a).copied().unwrap_or(0);
        let mut pool: Vec<(usize, u64, Arc<Sponsor>)> =
            allowed.iter().enumerate().filter_map(|(i, a)| Some((i, busy(a), self.get(a)?))).collect();
        pool.sort_by_key(|(i, busy, _)| (*busy, *i));
        pool.into_iter().map(|(_, _, s)| s).collect()
    }

    /// The permit token's EIP-712 domain, if read before.
    pub fn cached_permit_domain(&self, token: Address) -> Option<crate::chain::eip712::Domain> {
        self.permit_domains.lock().unwrap_or_else(|e| e.into_inner()).get(&token).cloned()
    }

    pub fn cache_permit_domain(&self, token: Address, domain: crate::chain::eip712::Domain) {
        self.permit_domains.lock().unwrap_or_else(|e| e.into_inner()).insert(token, domain);
    }

    /// How busy the pool thinks `sponsor` is right now: its open transactions at the last count
    /// plus the requests sent its way since.
    pub fn load_of(&self, sponsor: &Address) -> u64 {
        let load = self.load.lock().unwrap_or_else(|e| e.into_inner());
        load.open.get(sponsor).copied().unwrap_or(0) + load.picks.get(sponsor).copied().unwrap_or(0)
    }

    /// Counts a request sent to `sponsor` until the next count of its open transactions.
    pub fn note_pick(&self, sponsor: Address) {
        *self.load.lock().unwrap_or_else(|e| e.into_inner()).picks.entry(sponsor).or_default() += 1;
    }

    /// The pipeline's tunables (set with [`Sponsors::with_settings`]).
    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }
}

/// Per-sponsor state shared by the API side and the worker.
#[derive(Debug)]
struct Lane {
    sponsor: Arc<Sponsor>,
    /// Wakes the worker: something was queued.
    wake: Notify,
    /// The chain's latest transaction count as last seen (+1; 0 = unknown).
    chain_nonce: AtomicU64,
    /// Rows whose nonce the chain has used without a receipt for any of their hashes, since when.
    suspects: Mutex<HashMap<i64, Instant>>,
    /// Cancellations this process sent to fill nonce gaps (no row holds the nonce), by nonce.
    gap_fills: Mutex<HashMap<u64, (SignedAttempt, Instant)>>,
    /// Rows the node refused with an unknown error: how often, since when.
    refusals: Mutex<HashMap<i64, (u32, Instant)>>,
    /// What the re-checks of mined rows remember between passes.
    finality: Mutex<finality::Finality>,
    /// The highest block whose receipts the worker has matched against the queue (see
    /// `worker::Tick::included`): the next look starts above it.
    receipts_seen: Mutex<Option<u64>>,
    /// A lower bound of the sponsor's `next_nonce` in the database (which never goes down):
    /// raised by every batch this process queues and every raise of its worker. While the
    /// chain's count is not above it there is nothing to raise, and the worker skips the write.
    nonce_floor: AtomicU64,
    /// Whether this process's worker holds the sponsor's lease, as of its last take or renewal.
    leased: AtomicBool,
    /// The in-memory sequencer: while this process holds the lease, the sponsor's next nonce as
    /// this process last wrote it (`None`: unknown; the next batch takes its nonces from the
    /// database counter under its row lock, and sets it). Read and written under `enqueue_lock`.
    /// Only a hint: a batch queued at it is written only if the lease is still held and the
    /// counter still reads it (see [`Store::enqueue_leased`]).
    sequence: Mutex<Option<u64>>,
    /// Transactions of batches this process writes as the lease holder and sends to the node
    /// itself (see [`Pipeline::express`]), by hash: whether the node has taken them, and since
    /// when. Noted as each is signed, before the statement that writes its row commits, so no
    /// pass of the worker can read the row without finding it here. The worker leaves them to
    /// that send, and marks those the node took `submitted` instead of sending the same bytes
    /// again.
    express: Mutex<HashMap<B256, (Express, Instant)>>,
    /// Calls waiting to be queued, and the lock whose holder queues them all (group commit).
    enqueues: Mutex<Vec<WaitingEnqueue>>,
    enqueue_lock: Arc<tokio::sync::Mutex<()>>,
    /// Executes for this sponsor past their signature check and not yet waiting in `enqueues`
    /// (see [`Arriving`]), and the notification each sends as it stops being one.
    arriving: Arc<AtomicUsize>,
    arrived: Arc<Notify>,
    /// The sponsor's newest transaction first sent by this process and not yet seen mined: its
    /// nonce and when it was sent (see [`Pipeline::hold`]).
    in_flight: Mutex<Option<(u64, Instant)>>,
    /// Notified whenever this process sees the sponsor's transaction count rise.
    mined: Notify,
    /// The highest row id of each of the latest batches this process queued for the sponsor (at
    /// most [`OWN_BATCHES_KEPT`]): their `streampay_queued` notifications need not wake its worker.
    own_batches: Mutex<VecDeque<i64>>,
}

impl Lane {
    /// Notes the sponsor's transaction count read from the chain (or implied by a receipt):
    /// sets `chain_nonce`, and once the count passes the transaction in flight, forgets it and
    /// wakes a batch waiting for it.
    fn saw_count(&self, count: u64) {
        // Stored, not raised: a fresh read of the chain is the truth, also after a reorg.
        let before = self.chain_nonce.swap(count + 1, Ordering::Relaxed);
        if before > count {
            return;
        }
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if in_flight.is_some_and(|(nonce, _)| nonce < count) {
            *in_flight = None;
        }
        drop(in_flight);
        self.mined.notify_waiters();
    }

    /// Where [`Pipeline::express`] is with the transaction `hash` (a row's latest); one the node
    /// took is forgotten as it is answered (the worker marks its row `submitted`).
    fn express_of(&self, hash: B256) -> Option<Express> {
        let mut express = self.express.lock().unwrap_or_else(|e| e.into_inner());
        match *express.get(&hash)? {
            // A send that has not answered for this long (a node that holds requests past the
            // transport's timeout, a task that died): the worker sends it.
            (Express::Sending, since) if since.elapsed() > EXPRESS_PATIENCE => {
                express.remove(&hash);
                None
            }
            (Express::Sending, _) => Some(Express::Sending),
            (Express::Sent, _) => {
                express.remove(&hash);
                Some(Express::Sent)
            }
        }
    }

    /// Notes the transactions `hashes` as about to be sent by [`Pipeline::express`].
    fn expressing(&self, hashes: &[B256]) {
        let mut express = self.express.lock().unwrap_or_else(|e| e.into_inner());
        // Transactions the worker never read open (mined before its pass) leave their entry
        // behind: forgotten after a minute.
        if express.len() >= EXPRESS_KEPT {
            express.retain(|_, (_, at)| at.elapsed() < Duration::from_secs(60));
        }
        for hash in hashes {
            express.insert(*hash, (Express::Sending, Instant::now()));
        }
    }

    /// Forgets the transactions `hashes`: the worker sends them.
    fn not_expressing(&self, hashes: impl IntoIterator<Item = B256>) {
        let mut express = self.express.lock().unwrap_or_else(|e| e.into_inner());
        for hash in hashes {
            express.remove(&hash);
        }
    }

    /// Notes the first send of the sponsor's transaction at `nonce`.
    fn sent_first(&self, nonce: u64) {
        let mut in_flight = self.in_flight.lock().unwrap_or_else(|e| e.into_inner());
        if in_flight.is_none_or(|(n, _)| n < nonce) {
            *in_flight = Some((nonce, Instant::now()));
        }
    }
}

/// An express send of a row's transaction (see [`Pipeline::express`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Express {
    /// On its way to the node.
    Sending,
    /// The node took it.
    Sent,
}

/// An execute on its way to a sponsor's queue (simulation, admission): while any is, the holder
/// of the sponsor's enqueue lock waits up to `pipeline.bundle_linger_ms` before writing its
/// batch, so that calls arriving together share a bundle. Dropped (or handed to
/// [`Pipeline::enqueue_arriving`]) when the call is refused or waits in the queue.
#[derive(Debug)]
pub struct Arriving {
    count: Arc<AtomicUsize>,
    arrived: Arc<Notify>,
}

impl Drop for Arriving {
    fn drop(&mut self) {
        self.count.fetch_sub(1, Ordering::AcqRel);
        self.arrived.notify_waiters();
    }
}

/// A call waiting in [`Pipeline::enqueue`] for its batch to be written.
#[derive(Debug)]
struct WaitingEnqueue {
    ticket: u64,
    t: NewTransaction,
    fees: Fees,
    /// Its caller waits for the call to be mined (not for the 202 of a queued call): a batch may
    /// be held for it (see [`Pipeline::hold`]).
    patient: bool,
    /// `None`: the batch failed; queue it alone.
    done: oneshot::Sender<Option<Queued>>,
}

/// Beyond this many express-sent transactions remembered (see `Lane::express`), old entries are
/// dropped.
const EXPRESS_KEPT: usize = 1024;

/// How long the worker leaves a row to an express send that has not answered.
const EXPRESS_PATIENCE: Duration = Duration::from_secs(30);

/// How many of its own batches a lane remembers (see `Lane::own_batches`).
const OWN_BATCHES_KEPT: usize = 64;

/// Most new blocks [`Pipeline::sponsor_mined_since`] looks through (more: a pass is due).
const MAX_LOOK_BLOCKS: u64 = 16;

/// How often [`Pipeline::hold`] reads the sponsor's transaction count while it waits.
const HOLD_POLL: Duration = Duration::from_millis(5);

/// Most calls queued in one database transaction.
const MAX_ENQUEUE_BATCH: usize = 128;

/// A queued transaction, as `enqueue` answers.
#[derive(Debug, Clone, Copy)]
pub struct Queued {
    pub id: i64,
    pub sponsor_nonce: u64,
    pub hash: alloy::primitives::B256,
}

/// The running pipeline.
#[derive(Debug)]
pub struct Pipeline {
    store: Store,
    provider: DynProvider,
    settings: PipelineSettings,
    lanes: HashMap<Address, Arc<Lane>>,
    /// Identifies this process's leases.
    owner: String,
    fee_cache: Mutex<Option<(Instant, Fees)>>,
    waiters: Mutex<HashMap<i64, Vec<oneshot::Sender<()>>>>,
    /// Numbers the calls waiting to be queued.
    tickets: AtomicU64,
    /// The sponsors' load as the pool sees it ([`Sponsors::by_load`]).
    load: Arc<Mutex<Load>>,
    /// The latest block and blocks' receipts, read once for every sponsor's worker.
    blocks: blocks::Blocks,
}

impl Pipeline {
    /// The pipeline of `sponsors` (one lane per sponsor), not yet running: [`Pipeline::run`]
    /// drives it. Calls may be queued before it runs; they are sent once it does.
    pub fn new(sponsors: &Sponsors, store: Store, provider: DynProvider) -> Arc<Self> {
        let owner = format!(
            "{}:{}:{}",
            std::env::var("HOSTNAME").unwrap_or_else(|_| "host".into()),
            std::process::id(),
            alloy::hex::encode(rand::random::<[u8; 6]>())
        );
        let lanes = sponsors
            .by_address
            .iter()
            .map(|(a, sponsor)| {
                (
                    *a,
                    Arc::new(Lane {
                        sponsor: sponsor.clone(),
                        wake: Notify::new(),
                        chain_nonce: AtomicU64::new(0),
                        suspects: Mutex::default(),
                        gap_fills: Mutex::default(),
                        refusals: Mutex::default(),
                        finality: Mutex::default(),
                        receipts_seen: Mutex::default(),
                        nonce_floor: AtomicU64::new(0),
                        leased: AtomicBool::new(false),
                        sequence: Mutex::default(),
                        express: Mutex::default(),
                        enqueues: Mutex::default(),
                        enqueue_lock: Arc::default(),
                        arriving: Arc::default(),
                        arrived: Arc::default(),
                        in_flight: Mutex::default(),
                        mined: Notify::new(),
                        own_batches: Mutex::default(),
                    }),
                )
            })
            .collect();
        Arc::new(Self {
            store,
            provider,
            settings: sponsors.settings.clone(),
            lanes,
            owner,
            fee_cache: Mutex::new(None),
            waiters: Mutex::default(),
            tickets: AtomicU64::new(0),
            load: sponsors.load.clone(),
            blocks: blocks::Blocks::new(sponsors.settings.poll_interval),
        })
    }

    /// The newest head this chain's workers read, as they read it (`None` before the first).
    pub fn heads(&self) -> tokio::sync::watch::Receiver<Option<crate::indexer::BlockHeader>> {
        self.blocks.heads()
    }

    /// Runs the pipeline until `stop` is cancelled: one worker per sponsor (each finishes its
    /// tick, then gives its lease up so another replica takes over at once), the poll that wakes
    /// waiters of rows other replicas settled, and the count of each sponsor's open rows for
    /// the pool's load balancing. Answers once every part has stopped.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        // Its own token below the caller's: a failed part stops this pipeline's other parts,
        // never the other chains' pipelines that share the caller's token.
        let stop = stop.child_token();
        let mut parts = tokio::task::JoinSet::new();
        for lane in self.lanes.values() {
            parts.spawn(worker::run(Arc::downgrade(&self), lane.clone(), stop.clone()));
        }
        parts.spawn(poll_waiters(Arc::downgrade(&self), stop.clone()));
        if self.lanes.len() > 1 {
            parts.spawn(count_load(Arc::downgrade(&self), stop.clone()));
        }
        drop(self);
        while let Some(done) = parts.join_next().await {
            if let Err(e) = done
                && e.is_panic()
            {
                // The other parts stop too (cancelled, and aborted when the set is dropped: the
                // queue is crash-safe), and the supervisor restarts the whole pipeline.
                stop.cancel();
                anyhow::bail!("a pipeline task panicked");
            }
        }
        Ok(())
    }

    pub fn settings(&self) -> &PipelineSettings {
        &self.settings
    }

    /// Current EIP-1559 fees, cached for a second (every execute needs them).
    async fn estimate_fees(&self) -> anyhow::Result<Fees> {
        if let Some((at, fees)) = *self.fee_cache.lock().unwrap_or_else(|e| e.into_inner())
            && at.elapsed() < Duration::from_secs(1)
        {
            return Ok(fees);
        }
        let est = self.provider.estimate_eip1559_fees().await.context("Failed to estimate fees")?;
        let fees =
            Fees { max_fee_per_gas: est.max_fee_per_gas, max_priority_fee_per_gas: est.max_priority_fee_per_gas };
        *self.fee_cache.lock().unwrap_or_else(|e| e.into_inner()) = Some((Instant::now(), fees));
        Ok(fees)
    }

    /// The chain's count of the sponsor's mined transactions: the floor of its next nonce.
    async fn chain_nonce(&self, lane: &Lane) -> anyhow::Result<u64> {
        match lane.chain_nonce.load(Ordering::Relaxed) {
            0 => {
                let n = self
                    .provider
                    .get_transaction_count(lane.sponsor.address)
                    .latest()
                    .await
                    .context("Failed to read the sponsor's nonce")?;
                lane.saw_count(n);
                Ok(n)
            }
            n => Ok(n - 1),
        }
    }

    /// Queues `t` (its sponsor nonce allocated and its transaction signed in the same database
    /// transaction) and wakes the sponsor's worker. Once this returns, the call will be sent.
    ///
    /// Concurrent calls for one sponsor are queued together (group commit): whoever holds the
    /// sponsor's enqueue lock writes every call waiting at that moment in one transaction, so
    /// the sponsor's nonce row is locked once per batch instead of once per call, and a burst
    /// holds one database connection per sponsor instead of one per call.
    pub async fn enqueue(self: &Arc<Self>, t: NewTransaction) -> anyhow::Result<Queued> {
        self.enqueue_arriving(t, None, false).await
    }

    /// Counts an execute for `sponsor` as on its way to the queue until the answer is dropped
    /// (see [`Arriving`]); `None` for a sponsor this pipeline does not send for.
    pub fn arriving(&self, sponsor: Address) -> Option<Arriving> {
        let lane = self.lanes.get(&sponsor)?;
        lane.arriving.fetch_add(1, Ordering::AcqRel);
        Some(Arriving { count: lane.arriving.clone(), arrived: lane.arrived.clone() })
    }

    /// [`Pipeline::enqueue`] of a call counted by `arriving`, which stops counting once the call
    /// waits in the queue. `patient`: the caller waits for the call to be mined anyway, so its
    /// batch may be held for the sponsor's previous transaction ([`Pipeline::hold`]); a caller
    /// waiting only for the call to be queued (a 202) is never held.
    ///
    /// The holder of the enqueue lock writes its batch in a task of its own, which keeps the
    /// lock until every call of the batch is answered: a caller that goes away meanwhile (a
    /// client that disconnects, a timeout) cannot leave a batch written whose other calls never
    /// hear so and queue themselves a second time, nor a batch half done.
    pub async fn enqueue_arriving(
        self: &Arc<Self>,
        t: NewTransaction,
        arriving: Option<Arriving>,
        patient: bool,
    ) -> anyhow::Result<Queued> {
        let lane = self.lanes.get(&t.sponsor).context("sponsor not configured")?.clone();
        let fees = fees::initial(self.estimate_fees().await?, self.settings.max_fee_cap);
        let chain_nonce = self.chain_nonce(&lane).await?;
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let (done, mut result) = oneshot::channel();
        lane.enqueues.lock().unwrap_or_else(|e| e.into_inner()).push(WaitingEnqueue {
            ticket,
            t: t.clone(),
            fees,
            patient,
            done,
        });
        drop(arriving);
        loop {
            let guard = lane.enqueue_lock.clone().lock_owned().await;
            let (this, lane) = (self.clone(), lane.clone());
            match result.try_recv() {
                Ok(Some(queued)) => return Ok(queued),
                // Written in another caller's batch that failed: queued on its own, so the error
                // is this call's own.
                Ok(None) | Err(oneshot::error::TryRecvError::Closed) => {
                    let alone = tokio::spawn(async move {
                        let _guard = guard;
                        this.write_batch(&lane, &[t], &[fees], chain_nonce).await
                    });
                    return Ok(alone.await.context("the enqueue task failed")??[0]);
                }
                Err(oneshot::error::TryRecvError::Empty) => {}
            }
            let written = tokio::spawn(async move {
                let _guard = guard;
                this.hold(&lane).await;
                this.linger(&lane).await;
                let batch: Vec<WaitingEnqueue> = {
                    let mut waiting = lane.enqueues.lock().unwrap_or_else(|e| e.into_inner());
                    let n = waiting.len().min(MAX_ENQUEUE_BATCH);
                    waiting.drain(..n).collect()
                };
                let items: Vec<NewTransaction> = batch.iter().map(|w| w.t.clone()).collect();
                let fees: Vec<Fees> = batch.iter().map(|w| w.fees).collect();
                match this.write_batch(&lane, &items, &fees, chain_nonce).await {
                    Ok(queued) => {
                        for (w, q) in batch.into_iter().zip(queued) {
                            let _ = w.done.send(Some(q));
                        }
                        Ok(())
                    }
                    Err(e) => {
                        let ours = batch.iter().any(|w| w.ticket == ticket);
                        for w in batch {
                            let _ = w.done.send(None);
                        }
                        if ours { Err(e) } else { Ok(()) }
                    }
                }
            });
            written.await.context("the enqueue task failed")??;
            // Ours was answered by that batch, or is still waiting (more than a batch was queued).
        }
    }

    /// While the sponsor's newest transaction is on its way to a block, and every call waiting
    /// to be queued is one whose caller waits for it to be mined anyway (a synchronous execute),
    /// waits for that transaction to be mined (at most until `bundle_hold` after it was sent)
    /// before the batch is taken: the calls
    /// queued meanwhile then share the next bundle instead of each taking a nonce of its own
    /// behind it. Only on a chain that makes a block at least every `bundle_hold / 10` lately
    /// (an automining node under load, which mines each transaction as it comes, so a call sent
    /// at once would not share a block anyway): on a chain with an interval between blocks, a call
    /// sent at once goes into the same next block as the transaction on its way, and holding it
    /// back would cost it that block. Reads the sponsor's transaction count every [`HOLD_POLL`]
    /// while it waits (the worker may see the count first and wake it).
    async fn hold(&self, lane: &Lane) {
        let hold = self.settings.bundle_hold;
        if self.settings.bundle_max_calls < 2 || hold.is_zero() {
            return;
        }
        if self.blocks.block_interval().is_none_or(|per_block| per_block * 10 > hold) {
            return;
        }
        let started = tokio::time::Instant::now();
        let mut waited = false;
        loop {
            let mined = lane.mined.notified();
            let newest = *lane.in_flight.lock().unwrap_or_else(|e| e.into_inner());
            // Nothing on its way, or the newest already in a block; or sent `bundle_hold` ago, so
            // the chain is not mining it promptly: waiting longer would not help.
            let Some((nonce, sent)) = newest else { break };
            let until = tokio::time::Instant::from_std(sent + hold);
            let now = tokio::time::Instant::now();
            if lane.chain_nonce.load(Ordering::Relaxed) > nonce + 1 || now >= until {
                break;
            }
            // A caller waiting only for its call to be queued is not kept waiting for a block.
            if lane.enqueues.lock().unwrap_or_else(|e| e.into_inner()).iter().any(|w| !w.patient) {
                break;
            }
            waited = true;
            if tokio::time::timeout_at((now + HOLD_POLL).min(until), mined).await.is_ok() {
                continue;
            }
            match self.provider.get_transaction_count(lane.sponsor.address).latest().await {
                Ok(count) => lane.saw_count(count),
                Err(e) => {
                    tracing::debug!(error = format!("{e:#}"), "sponsor nonce read failed while holding a batch");
                    break;
                }
            }
        }
        if waited {
            crate::observability::pipeline_stage("hold", started.elapsed().as_secs_f64());
        }
    }

    /// While executes for the lane's sponsor are on their way to its queue, waits for them (at
    /// most `bundle_linger`) before the batch is taken: they then share its bundle.
    async fn linger(&self, lane: &Lane) {
        let linger = self.settings.bundle_linger;
        if self.settings.bundle_max_calls < 2 || linger.is_zero() {
            return;
        }
        let until = tokio::time::Instant::now() + linger;
        loop {
            let arrived = lane.arrived.notified();
            if lane.arriving.load(Ordering::Acquire) == 0 {
                return;
            }
            if tokio::time::timeout_at(until, arrived).await.is_err() {
                return;
            }
        }
    }

    async fn write_batch(
        &self,
        lane: &Arc<Lane>,
        items: &[NewTransaction],
        fees: &[Fees],
        chain_nonce: u64,
    ) -> anyhow::Result<Vec<Queued>> {
        let slots = bundle_slots(items, self.settings.bundle_max_calls, self.settings.bundle_max_gas);
        // The hash and signed bytes of each slot, by nonce, for the express send of a leased batch.
        let signed_raw: Mutex<HashMap<u64, (B256, Bytes)>> = Mutex::default();
        let sign = |s: usize, nonce: u64| {
            let calls = &slots[s];
            let first = &items[calls[0]];
            // A bundle is priced at the highest of its calls' fees (they were read moments apart).
            let fees = calls.iter().map(|i| fees[*i]).max_by_key(|f| f.max_fee_per_gas).unwrap_or(fees[calls[0]]);
            let (signed, bundle) = if calls.len() == 1 {
                (lane.sponsor.sign_call(nonce, first.contract, first.calldata.clone(), first.gas_limit, fees)?, None)
            } else {
                let bundle = bundle_tx(items, calls);
                let signed =
                    lane.sponsor.sign_call(nonce, first.contract, bundle.calldata.clone(), bundle.gas_limit, fees)?;
                (signed, Some(bundle))
            };
            signed_raw.lock().unwrap_or_else(|e| e.into_inner()).insert(nonce, (signed.hash, signed.raw.clone()));
            Ok((signed, bundle))
        };
        // The lease holder counts the sponsor's nonces itself: one statement, fenced by the lease
        // and by the counter, writes the batch. Where that is unknown, or the chain has used
        // nonces above it (the key was used elsewhere), or the statement finds the lease or the
        // counter moved, the nonces come from the counter under its row lock.
        let counted = if lane.leased.load(Ordering::Acquire) {
            lane.sequence.lock().unwrap_or_else(|e| e.into_inner()).filter(|next| *next >= chain_nonce)
        } else {
            None
        };
        let mut rows = None;
        if let Some(base) = counted {
            // Each transaction is noted as being sent by the express send as it is signed, before
            // the statement commits its row: a pass of the worker woken meanwhile (by a poll, or
            // by the row's own notification) leaves it to that send.
            let sign_expressed = |s: usize, nonce: u64| {
                let signed = sign(s, nonce)?;
                lane.expressing(&[signed.0.hash]);
                Ok(signed)
            };
            let leased = self.store.enqueue_leased(items, &slots, &self.owner, base, sign_expressed).await;
            let mut raw = std::mem::take(&mut *signed_raw.lock().unwrap_or_else(|e| e.into_inner()));
            // Not written: nothing of it is sent here.
            match &leased {
                Ok(Some(_)) => {}
                Ok(None) => {
                    crate::observability::sequencer_batch("stale");
                    lane.not_expressing(raw.values().map(|(hash, _)| *hash));
                }
                Err(_) => {
                    self.forget_sequence(lane);
                    lane.not_expressing(raw.values().map(|(hash, _)| *hash));
                }
            }
            rows = leased?;
            if let Some(rows) = &rows {
                crate::observability::sequencer_batch("leased");
                let sends = slots
                    .iter()
                    .enumerate()
                    .filter_map(|(s, calls)| {
                        let (id, nonce, hash) = rows[calls[0]];
                        let (signed, bytes) = raw.remove(&(base + s as u64))?;
                        (signed == hash).then_some((id, nonce, hash, bytes))
                    })
                    .collect();
                // Anything signed and not sent here (none expected) is the worker's to send.
                lane.not_expressing(raw.into_values().map(|(hash, _)| hash));
                self.express(lane, sends);
            }
        }
        let rows = match rows {
            Some(rows) => rows,
            None => {
                let rows = self.store.enqueue_transactions(items, &slots, chain_nonce, &sign).await;
                let rows = rows.inspect_err(|_| self.forget_sequence(lane))?;
                crate::observability::sequencer_batch("locked");
                rows
            }
        };
        if let Some(top) = rows.iter().map(|r| r.1).max() {
            lane.nonce_floor.fetch_max(top + 1, Ordering::Relaxed);
            let mut sequence = lane.sequence.lock().unwrap_or_else(|e| e.into_inner());
            *sequence = lane.leased.load(Ordering::Acquire).then_some(top + 1);
        }
        if let Some(top) = rows.iter().map(|r| r.0).max() {
            let mut own = lane.own_batches.lock().unwrap_or_else(|e| e.into_inner());
            if own.len() == OWN_BATCHES_KEPT {
                own.pop_front();
            }
            own.push_back(top);
        }
        lane.wake.notify_one();
        Ok(rows.into_iter().map(|(id, sponsor_nonce, hash)| Queued { id, sponsor_nonce, hash }).collect())
    }

    /// Sends a batch the lease holder just wrote (`(leader row, nonce, hash, signed bytes)` per
    /// transaction, in nonce order) to the node at once, in a task of its own, rather than
    /// waiting for the worker's pass to read the rows back and send them. The transactions were
    /// noted as being sent as they were signed, before their rows were written: the worker, woken
    /// by the same write, leaves them to this send, and marks each the node took as `submitted`
    /// without sending it again. If the node refuses
    /// one, the task stops there, forgets that row and the ones after it, and wakes the worker,
    /// which sends them and acts on the answer as for any row. The bytes are on record before
    /// they go out, as for every send; and only a batch written under the lease comes here, so a
    /// process that lost its lease sends nothing new this way either.
    fn express(&self, lane: &Arc<Lane>, sends: Vec<(i64, u64, B256, Bytes)>) {
        let (lane, provider, store) = (lane.clone(), self.provider.clone(), self.store.clone());
        let lease = Lease { chain_id: lane.sponsor.chain_id, sponsor: lane.sponsor.address, owner: self.owner.clone() };
        let written = Instant::now();
        tokio::spawn(async move {
            for (i, (id, nonce, hash, raw)) in sends.iter().enumerate() {
                let started = Instant::now();
                let sent = provider.send_raw_transaction(raw).await;
                crate::observability::pipeline_stage("send", started.elapsed().as_secs_f64());
                let refused = match sent {
                    Err(e) if fault::classify(&e) != fault::SendFault::AlreadyKnown => Some(e.to_string()),
                    _ => None,
                };
                if let Some(message) = refused {
                    tracing::debug!(id, nonce, %message, "express send refused; left to the worker");
                    lane.not_expressing(sends[i..].iter().map(|(_, _, hash, _)| *hash));
                    // Shown as the row's last error until a send succeeds, as a refusal the
                    // worker met would be (fenced like the worker's writes).
                    if let Err(e) = store.note_error(&lease, *id, &message).await {
                        tracing::debug!(id, error = format!("{e:#}"), "could not record the express send's refusal");
                    }
                    lane.wake.notify_one();
                    return;
                }
                let mut express = lane.express.lock().unwrap_or_else(|e| e.into_inner());
                express.insert(*hash, (Express::Sent, Instant::now()));
                drop(express);
                crate::observability::pipeline_stage("queue_wait", written.elapsed().as_secs_f64());
                lane.sent_first(*nonce);
            }
        });
    }

    /// Forgets the lane's in-memory next nonce: the next batch reads the database counter.
    fn forget_sequence(&self, lane: &Lane) {
        *lane.sequence.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// This process no longer holds the lane's lease (or no longer knows it does): its batches
    /// take their nonces from the database counter.
    fn lease_gone(&self, lane: &Lane) {
        lane.leased.store(false, Ordering::Release);
        self.forget_sequence(lane);
    }

    /// Waits until row `id` is settled (mined, failed, replaced, expired) or `timeout` passes;
    /// the caller reads the row's outcome after it. Woken at once by this process's worker, or
    /// by the notification of a row another replica settled (with a slow poll as a fallback, see
    /// `poll_waiters`).
    pub async fn wait_settled(&self, id: i64, timeout: Duration) {
        let (tx, rx) = oneshot::channel();
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).entry(id).or_default().push(tx);
        // Settled before the waiter was registered: nothing would wake it.
        let settled = match self.store.transaction_status(id).await {
            Ok(status) => status.is_none_or(|s| s.is_settled()),
            Err(e) => {
                tracing::debug!(id, error = format!("{e:#}"), "status read failed; still waiting");
                false
            }
        };
        if !settled {
            let _ = tokio::time::timeout(timeout, rx).await;
        }
        self.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&id);
    }

    /// Whether a block above `looked` (up to the latest, shared with the other workers) carries
    /// a transaction from the lane's sponsor; `looked` moves to the latest block. The first look,
    /// more than [`MAX_LOOK_BLOCKS`] new blocks, or a block whose receipts cannot be read answer
    /// true (a pass finds out).
    async fn sponsor_mined_since(&self, lane: &Lane, looked: &mut Option<u64>) -> anyhow::Result<bool> {
        let head = self.blocks.latest(&self.provider, None).await?;
        let from = match *looked {
            Some(l) if l >= head.number => return Ok(false),
            Some(l) if head.number - l <= MAX_LOOK_BLOCKS => l + 1,
            _ => {
                *looked = Some(head.number);
                return Ok(true);
            }
        };
        for n in from..=head.number {
            let Some(receipts) = self.blocks.receipts(&self.provider, n).await? else {
                return Ok(true);
            };
            if receipts.iter().any(|r| r.from == lane.sponsor.address) {
                *looked = Some(head.number);
                return Ok(true);
            }
        }
        *looked = Some(head.number);
        Ok(false)
    }

    /// Wakes the worker of the sponsor a `streampay_queued` notification names
    /// (`<chain id>:0x<sponsor>:<highest id>`), if it is on this pipeline's chain and the rows
    /// are not a batch this process wrote (its worker was woken by the write).
    fn wake_queued(&self, payload: &str) {
        let mut parts = payload.split(':');
        let (Some(Ok(chain)), Some(Ok(sponsor)), Some(Ok(top))) = (
            parts.next().map(str::parse::<u64>),
            parts.next().map(str::parse::<Address>),
            parts.next().map(str::parse::<i64>),
        ) else {
            return;
        };
        if let Some(lane) = self.lanes.get(&sponsor)
            && lane.sponsor.chain_id == chain
            && !lane.own_batches.lock().unwrap_or_else(|e| e.into_inner()).contains(&top)
        {
            lane.wake.notify_one();
        }
    }

    fn notify_settled(&self, id: i64) {
        if let Some(waiters) = self.waiters.lock().unwrap_or_else(|e| e.into_inner()).remove(&id) {
            for w in waiters {
                let _ = w.send(());
            }
        }
    }
}

/// How often the waiters' rows are read while the settled-rows listener is connected: only a
/// fallback for a notification lost on its way (every settle notifies, see migration 0037).
const WAITERS_FALLBACK_POLL: Duration = Duration::from_secs(1);

/// Wakes the waiters of rows another replica settled: a `LISTEN` on the `streampay_settled`
/// channel (each row that settles notifies it with its id), plus one query for all the rows
/// waited on here every [`WAITERS_FALLBACK_POLL`], or every `poll_interval` while the listener is
/// not connected (none while nobody waits). Waiters of rows this process settles are woken by
/// its worker directly. The same connection listens on `streampay_queued` and wakes the worker
/// of a sponsor another replica queued calls for (migration 0042); while it is not connected,
/// the workers find those calls at their next full pass.
async fn poll_waiters(pipeline: std::sync::Weak<Pipeline>, stop: CancellationToken) {
    let mut listener: Option<sqlx::postgres::PgListener> = None;
    let mut next_poll = tokio::time::Instant::now();
    let mut next_connect = tokio::time::Instant::now();
    while !stop.is_cancelled() {
        let Some(p) = pipeline.upgrade() else { return };
        let now = tokio::time::Instant::now();
        if listener.is_none() && now >= next_connect {
            match p.store.listen_settled().await {
                Ok(l) => {
                    listener = Some(l);
                    // Rows settled while it was not listening are found by the poll, now.
                    next_poll = now;
                }
                Err(e) => {
                    tracing::debug!(error = format!("{e:#}"), "settled-rows listener cannot connect; polling");
                    next_connect = now + WAITERS_FALLBACK_POLL;
                }
            }
        }
        if tokio::time::Instant::now() >= next_poll {
            let ids: Vec<i64> = p.waiters.lock().unwrap_or_else(|e| e.into_inner()).keys().copied().collect();
            if !ids.is_empty() {
                match p.store.settled_among(&ids).await {
                    Ok(settled) => settled.into_iter().for_each(|id| p.notify_settled(id)),
                    Err(e) => tracing::debug!(error = format!("{e:#}"), "waiters poll failed"),
                }
            }
            let every = if listener.is_some() { WAITERS_FALLBACK_POLL } else { p.settings.poll_interval };
            next_poll = tokio::time::Instant::now() + every;
        }
        let poll_at =
            if listener.is_some() { next_poll } else { next_poll.min(next_connect.max(tokio::time::Instant::now())) };
        let weak = std::sync::Arc::downgrade(&p);
        drop(p);
        match listener.as_mut() {
            Some(l) => tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(poll_at) => {}
                n = l.try_recv() => match n {
                    Ok(Some(n)) => {
                        if let Some(p) = weak.upgrade() {
                            if n.channel() == crate::store::QUEUED_CHANNEL {
                                p.wake_queued(n.payload());
                            } else if let Ok(id) = n.payload().parse::<i64>() {
                                p.notify_settled(id);
                            }
                        }
                    }
                    // The connection was lost: notifications may have been missed. Reconnect,
                    // and poll meanwhile.
                    Ok(None) | Err(_) => {
                        listener = None;
                        next_poll = tokio::time::Instant::now();
                    }
                },
            },
            None => tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep_until(poll_at) => {}
            },
        }
    }
}

/// Keeps the pool's view of each sponsor's open transactions current.
async fn count_load(pipeline: std::sync::Weak<Pipeline>, stop: CancellationToken) {
    while !stop.is_cancelled() {
        let Some(p) = pipeline.upgrade() else { return };
        let load = p.load.clone();
        let every = p.settings.poll_interval.max(Duration::from_millis(100));
        let sponsors: Vec<Address> = p.lanes.keys().copied().collect();
        let chain_id = p.lanes.values().next().map(|l| l.sponsor.chain_id).unwrap_or_default();
        match p.store.open_counts(chain_id, &sponsors).await {
            Ok(open) => {
                let mut load = load.lock().unwrap_or_else(|e| e.into_inner());
                load.open = open;
                load.picks.clear();
            }
            Err(e) => tracing::debug!(error = format!("{e:#}"), "sponsor load count failed"),
        }
        drop(p);
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(every) => {}
        }
    }
}

/// Splits a batch queued together for one sponsor into the transactions it goes out in: users'
/// signed calls (those with a call digest) to one contract, in queue order, share a bundle of at
/// most `max_calls` calls and `max_gas` gas; anything else (keeper calls) goes alone, and so
/// does a bundle that would hold one call.
pub(crate) fn bundle_slots(items: &[NewTransaction], max_calls: usize, max_gas: u64) -> Vec<Vec<usize>> {
    let mut slots: Vec<Vec<usize>> = Vec::new();
    // The open bundle of each contract: (slot, gas so far).
    let mut open: HashMap<Address, (usize, u64)> = HashMap::new();
    for (i, t) in items.iter().enumerate() {
        if max_calls < 2 || t.call_digest.is_none() {
            slots.push(vec![i]);
            continue;
        }
        match open.get_mut(&t.contract) {
            Some((s, gas)) if slots[*s].len() < max_calls && gas.saturating_add(t.gas_limit) <= max_gas => {
                slots[*s].push(i);
                *gas += t.gas_limit;
            }
            _ => {
                slots.push(vec![i]);
                open.insert(t.contract, (slots.len() - 1, t.gas_limit));
            }
        }
    }
    slots
}

/// What the leader of a bundle of `calls` (indexes into `items`) sends: `bundle(calls)` to their
/// contract, for the sum of their gas limits (each includes the 21,000 a transaction of its own
/// would pay, more than a call's share of the bundle's overhead), by their earliest deadline.
fn bundle_tx(items: &[NewTransaction], calls: &[usize]) -> BundleTx {
    use alloy::sol_types::SolCall;
    let data =
        crate::chain::StreamPay::bundleCall { calls: calls.iter().map(|i| items[*i].calldata.clone()).collect() }
            .abi_encode();
    BundleTx {
        calldata: data.into(),
        gas_limit: calls.iter().map(|i| items[*i].gas_limit).sum(),
        deadline: calls.iter().map(|i| items[*i].deadline).filter(|d| *d > 0).min().unwrap_or(0),
    }
}
