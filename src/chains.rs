//! The chains one relayer process serves. Each [`Chain`] has its own RPC provider (one or more
//! URLs with failover, see [`crate::chain::connect_many`]), chain id, finality depth, StreamPay
//! deployments, sponsors and their pipeline, and its own read model over the shared Postgres
//! index (every table is keyed by chain id). Deployment names are unique across all chains, so
//! the API's `{contract}` path segment names one deployment on one chain.

use std::sync::{
    Arc,
    atomic::{AtomicBool, AtomicU64, Ordering},
};

use alloy::{
    primitives::Address,
    providers::{DynProvider, Provider},
};

use crate::{
    chain::{Deployment, HeadClock, PERMIT2},
    indexer::IndexReader,
    pipeline::{Pipeline, Sponsors},
    pricing::Pricing,
    store::Store,
};

fn unix_now() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

/// How long [`Chain::advertises_permit2`] believes that Permit2 is not deployed.
pub const PERMIT2_ABSENT_TTL_SECS: u64 = 60;

/// One chain and everything this process does on it.
#[derive(Debug)]
pub struct Chain {
    /// A label for logs, `/health` and `/metrics` (the configured name, else the chain id).
    pub name: String,
    pub chain_id: u64,
    pub provider: DynProvider,
    /// Blocks after which a mined transaction counts as final on this chain.
    pub finality_depth: u64,
    pub deployments: Vec<Deployment>,
    pub sponsors: Sponsors,
    /// The sponsors' transaction queue; built here, run by the wiring's supervisor.
    pub pipeline: Arc<Pipeline>,
    /// The read model every read endpoint answers from for this chain.
    pub index: IndexReader,
    /// The fee estimate and receipt prices, refreshed in the background (run by the wiring's
    /// supervisor); requests only read them.
    pub pricing: Arc<Pricing>,
    /// The latest block's timestamp, cached briefly: `execute`'s deadline pre-check.
    pub head: HeadClock,
    /// Set once Permit2 has been seen deployed (code at [`PERMIT2`]); code is never removed.
    permit2_seen: AtomicBool,
    /// Until when (Unix seconds) a "no code at Permit2's address" answer is believed: the public
    /// `/api/v1/meta` asks this on every call, and must not cost a node round trip each time.
    permit2_absent_until: AtomicU64,
}

/// What [`Chain::new`] is built from.
#[derive(Debug)]
pub struct ChainParts {
    pub name: Option<String>,
    pub chain_id: u64,
    pub provider: DynProvider,
    pub finality_depth: u64,
    pub deployments: Vec<Deployment>,
    pub sponsors: Sponsors,
}

impl Chain {
    /// Builds the chain's pipeline and pricing (neither running yet) and read model (`read_cache`: with the
    /// notification-invalidated cache, see [`IndexReader::with_cache`]; its listener starts
    /// here, so this must run inside the Tokio runtime).
    pub fn new(parts: ChainParts, store: &Store, read_cache: bool) -> Arc<Self> {
        let pipeline = Pipeline::new(&parts.sponsors, store.clone(), parts.provider.clone());
        let pricing =
            Pricing::new(parts.chain_id, parts.provider.clone(), store.clone(), pipeline.settings().max_fee_cap);
        let pool = store.pool().clone();
        let index = if read_cache {
            IndexReader::with_cache(pool, parts.chain_id)
        } else {
            IndexReader::new(pool, parts.chain_id)
        };
        Arc::new(Self {
            name: parts.name.unwrap_or_else(|| parts.chain_id.to_string()),
            chain_id: parts.chain_id,
            provider: parts.provider,
            finality_depth: parts.finality_depth,
            deployments: parts.deployments,
            sponsors: parts.sponsors,
            pipeline,
            index,
            pricing,
            head: HeadClock::default(),
            permit2_seen: AtomicBool::new(false),
            permit2_absent_until: AtomicU64::new(0),
        })
    }

    /// Whether Uniswap Permit2 is deployed on this chain (code at its canonical address), so
    /// that Permit2 deposits can succeed. A yes is kept; a no is asked again next time (the
    /// build and execute paths, which call the node anyway).
    pub async fn has_permit2(&self) -> Result<bool, alloy::transports::TransportError> {
        if self.permit2_seen.load(Ordering::Relaxed) {
            return Ok(true);
        }
        self.ask_permit2().await
    }

    /// [`Self::has_permit2`] for the public `/api/v1/meta`, which anyone may call at any rate:
    /// a no is believed for [`PERMIT2_ABSENT_TTL_SECS`], so the node is asked at most once a
    /// minute (a yes found by a build in between shows at once).
    pub async fn advertises_permit2(&self) -> Result<bool, alloy::transports::TransportError> {
        if self.permit2_seen.load(Ordering::Relaxed) {
            return Ok(true);
        }
        if unix_now() < self.permit2_absent_until.load(Ordering::Relaxed) {
            return Ok(false);
        }
        self.ask_permit2().await
    }

    async fn ask_permit2(&self) -> Result<bool, alloy::transports::TransportError> {
        let now = unix_now();
        let code = self.provider.get_code_at(PERMIT2).await?;
        let seen = !code.is_empty();
        if seen {
            self.permit2_seen.store(true, Ordering::Relaxed);
        } else {
            self.permit2_absent_until.store(now + PERMIT2_ABSENT_TTL_SECS, Ordering::Relaxed);
        }
        Ok(seen)
    }

    /// The deployment named `name` (any case).
    pub fn deployment(&self, name: &str) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.name.eq_ignore_ascii_case(name))
    }

    /// The deployment at `address`.
    pub fn deployment_at(&self, address: Address) -> Option<&Deployment> {
        self.deployments.iter().find(|d| d.address == address)
    }
}

/// Checks what must hold across the chains of one process: at least one, distinct chain ids,
/// and deployment names unique across all of them (the API names a deployment by its name).
pub fn check(chains: &[Arc<Chain>]) -> anyhow::Result<()> {
    anyhow::ensure!(!chains.is_empty(), "no chain configured");
    for (i, c) in chains.iter().enumerate() {
        if chains[..i].iter().any(|o| o.chain_id == c.chain_id) {
            anyhow::bail!("chain {} is configured twice", c.chain_id);
        }
        for d in &c.deployments {
            for other in &chains[..i] {
                if other.deployment(&d.name).is_some() {
                    anyhow::bail!(
                        "deployment name {} is used on chain {} and chain {}: names must be unique across chains",
                        d.name,
                        other.chain_id,
                        c.chain_id
                    );
                }
            }
        }
    }
    Ok(())
}
