//! `GET /health`: `ok | degraded | down` with the subsystems at fault.
//!
//! - `down` (503): the relayer cannot serve its core job. The database (keys, nonces, queue) does
//!   not answer, or no chain's RPC node (building, simulating, sending) answers on its chain id.
//!   With several chains, a node that fails while another answers makes it `degraded` (`rpc`).
//! - `degraded` (200): it serves, but something needs an operator: the index trails the chain by
//!   more than `health.max_indexer_lag_blocks`, or a sponsor's native balance is below
//!   `health.sponsor_min_balance` (it will soon fail to pay gas).
//!
//! Every check runs concurrently under [`HealthSettings::check_timeout`], so a dependency that
//! hangs (a stopped database behind a pool, a black-holed RPC) makes `/health` answer `down`
//! quickly instead of hanging the load balancer's probe.

use std::{
    future::{Future, IntoFuture},
    time::{Duration, Instant},
};

use alloy::{
    primitives::{Address, U256},
    providers::Provider,
};
use axum::{Json, extract::State, http::StatusCode};
use serde::Serialize;
use utoipa::ToSchema;

use super::{API_VERSION, AppState, checksum};
use crate::{
    amount::{INTERNAL_DECIMALS, format_units},
    chains::Chain,
};

/// Thresholds of `/health`.
#[derive(Debug, Clone)]
pub struct HealthSettings {
    /// Blocks the index may trail the chain head before `indexer_lag` is reported.
    pub max_indexer_lag_blocks: u64,
    /// Native balance (wei) under which a sponsor is reported as `sponsor_balance_low`.
    pub sponsor_min_balance_wei: U256,
    /// Longest any single check may take.
    pub check_timeout: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        Self {
            max_indexer_lag_blocks: 100,
            // 0.1 native coin: a few hundred relayed calls at typical L2 prices, a handful on L1.
            sponsor_min_balance_wei: U256::from(100_000_000_000_000_000u64),
            check_timeout: Duration::from_secs(3),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Ok,
    Degraded,
    Down,
}

/// A subsystem at fault.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum Subsystem {
    Database,
    Rpc,
    IndexerLag,
    SponsorBalanceLow,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: Status,
    /// Empty when `status` is `ok`.
    pub degraded_subsystems: Vec<Subsystem>,
    pub chain_id: u64,
    #[schema(example = "2026-11-21")]
    pub api_version: &'static str,
    /// The first chain's node in `rpc`; every chain's deployments and sponsors in `indexer` and
    /// `sponsors`.
    pub checks: Checks,
    /// Each chain's own checks.
    pub chains: Vec<ChainCheck>,
}

/// The checks of one chain.
#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct ChainCheck {
    pub name: String,
    pub chain_id: u64,
    pub rpc: RpcProbe,
    pub indexer: Vec<IndexerCheck>,
    pub sponsors: Vec<SponsorCheck>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Checks {
    pub database: Probe,
    pub rpc: RpcProbe,
    /// One entry per deployment.
    pub indexer: Vec<IndexerCheck>,
    pub sponsors: Vec<SponsorCheck>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct Probe {
    pub ok: bool,
    pub latency_ms: u64,
    /// Why it failed (no secrets: connection strings are never included).
    pub error: Option<String>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct RpcProbe {
    pub ok: bool,
    pub latency_ms: u64,
    /// What failed, in a fixed wording (the node's own error is logged, redacted, not served).
    pub error: Option<String>,
    /// The chain head, when the node answered.
    pub block_number: Option<u64>,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct IndexerCheck {
    pub contract: String,
    pub chain_id: u64,
    /// `ok`, `lagging`, `not_started` (no checkpoint yet) or `unknown` (database or RPC down).
    #[schema(example = "ok")]
    pub status: &'static str,
    pub indexed_block: Option<u64>,
    pub chain_head: Option<u64>,
    pub lag_blocks: Option<u64>,
    pub max_lag_blocks: u64,
}

#[derive(Debug, Clone, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SponsorCheck {
    pub address: String,
    pub chain_id: u64,
    /// Native balance in wei; null when the node did not answer.
    pub balance_wei: Option<String>,
    /// The same in whole native coin.
    pub balance: Option<String>,
    pub min_balance_wei: String,
    pub low: bool,
}

/// Runs `f` under `timeout`, timing it; a timeout is an error like any other.
async fn timed<T, E: std::fmt::Display>(
    timeout: Duration,
    f: impl Future<Output = Result<T, E>>,
) -> (Result<T, String>, u64) {
    let started = Instant::now();
    let out = match tokio::time::timeout(timeout, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("no answer within {} ms", timeout.as_millis())),
    };
    (out, started.elapsed().as_millis() as u64)
}

/// `GET /health`. Public.
#[utoipa::path(get, path = "/health", tag = "Status",
    responses(
        (status = 200, description = "`ok` or `degraded`: the relayer serves", body = Health),
        (status = 503, description = "`down`: the database or the RPC node does not answer", body = Health),
    ))]
pub async fn health(State(state): State<AppState>) -> (StatusCode, Json<Health>) {
    // One probe at a time, and its answer for up to PROBE_EVERY: the endpoint is public, and
    // each probe costs RPCs and a database round trip.
    let mut cached = state.probes.health.lock().await;
    if let Some((at, code, body)) = cached.as_ref()
        && at.elapsed() < PROBE_EVERY
    {
        return (*code, Json(body.clone()));
    }
    let (code, Json(body)) = probe(&state).await;
    *cached = Some((Instant::now(), code, body.clone()));
    (code, Json(body))
}

/// How long a `/health` answer (and a refresh of `/metrics`' gauges) is reused.
pub const PROBE_EVERY: Duration = Duration::from_secs(1);

/// The last `/health` answer and the last gauge refresh, shared by every request of the process.
#[derive(Debug, Default)]
pub struct Probes {
    health: tokio::sync::Mutex<Option<(Instant, StatusCode, Health)>>,
    pub gauges: tokio::sync::Mutex<Option<Instant>>,
}

async fn probe(state: &AppState) -> (StatusCode, Json<Health>) {
    let settings = &state.settings.health;
    let t = settings.check_timeout;
    let database = timed(t, state.store.check());
    let chains = futures::future::join_all(state.chains.iter().map(|c| probe_chain(state, c)));
    let ((db, db_ms), chains) = tokio::join!(database, chains);

    let mut degraded = Vec::new();
    if db.is_err() {
        degraded.push(Subsystem::Database);
    }
    // With several chains, one chain's node failing degrades the relayer; it is down only when
    // no chain's node answers (one chain: its node failing is `down`, as before).
    let rpc_down = chains.iter().filter(|c| !c.rpc.ok).count();
    if rpc_down > 0 {
        degraded.push(Subsystem::Rpc);
    }
    if chains.iter().flat_map(|c| &c.indexer).any(|i| i.status == "lagging") {
        degraded.push(Subsystem::IndexerLag);
    }
    if chains.iter().flat_map(|c| &c.sponsors).any(|s| s.low) {
        degraded.push(Subsystem::SponsorBalanceLow);
    }

    let down = db.is_err() || (rpc_down > 0 && rpc_down == chains.len());
    let status = if down {
        Status::Down
    } else if degraded.is_empty() {
        Status::Ok
    } else {
        Status::Degraded
    };
    let first = chains.first();
    let body = Health {
        status,
        degraded_subsystems: degraded,
        chain_id: first.map(|c| c.chain_id).unwrap_or_default(),
        api_version: API_VERSION,
        checks: Checks {
            database: Probe { ok: db.is_ok(), latency_ms: db_ms, error: db.err() },
            rpc: first.map(|c| c.rpc.clone()).unwrap_or(RpcProbe {
                ok: false,
                latency_ms: 0,
                error: Some("no chain configured".into()),
                block_number: None,
            }),
            indexer: chains.iter().flat_map(|c| c.indexer.clone()).collect(),
            sponsors: chains.iter().flat_map(|c| c.sponsors.clone()).collect(),
        },
        chains,
    };
    let code = if down { StatusCode::SERVICE_UNAVAILABLE } else { StatusCode::OK };
    (code, Json(body))
}

/// The checks of one chain: its node, its deployments' index lag and its sponsors' balances.
async fn probe_chain(state: &AppState, chain: &Chain) -> ChainCheck {
    let settings = &state.settings.health;
    let t = settings.check_timeout;
    let rpc = timed(t, async {
        let (id, head) = tokio::try_join!(chain.provider.get_chain_id(), chain.provider.get_block_number())?;
        Ok::<_, alloy::transports::TransportError>((id, head))
    });
    let sponsors = futures::future::join_all(chain.sponsors.addresses().iter().map(|a| {
        let provider = chain.provider.clone();
        let a = *a;
        async move { (a, timed(t, provider.get_balance(a).into_future()).await.0.ok()) }
    }));
    let reader = &chain.index;
    let lags = futures::future::join_all(
        chain.deployments.iter().map(|c| async move { (c, timed(t, reader.lag(c.address)).await.0) }),
    );
    let ((rpc, rpc_ms), sponsors, lags) = tokio::join!(rpc, sponsors, lags);

    // A fixed text, never the transport's: this answer is public, and a node's errors name
    // hosts, resolver answers and (before redaction) the URL with its provider key.
    let mut rpc_error = match &rpc {
        Err(e) if e.starts_with("no answer within") => Some(e.clone()),
        Err(_) => Some("the RPC node could not be reached or answered with an error".to_string()),
        Ok(_) => None,
    };
    if let Err(e) = &rpc {
        tracing::warn!(chain = %chain.name, error = %e, "health check: the RPC node failed");
    }
    let head = match rpc {
        Ok((id, head)) if id == chain.chain_id => Some(head),
        Ok((id, _)) => {
            rpc_error = Some(format!("the node is on chain {id}, not {}", chain.chain_id));
            None
        }
        Err(_) => None,
    };

    let mut indexer = Vec::new();
    for (contract, lag) in lags {
        let mut check = IndexerCheck {
            contract: contract.name.clone(),
            chain_id: chain.chain_id,
            status: "unknown",
            indexed_block: None,
            chain_head: None,
            lag_blocks: None,
            max_lag_blocks: settings.max_indexer_lag_blocks,
        };
        match lag {
            // No checkpoint yet: the index is behind by everything since the deployment's start
            // block. Within the threshold (a fresh deployment) that is `not_started`; beyond it
            // the indexer is not keeping up (or not running) and counts as lag.
            Ok(None) => {
                check.status = "not_started";
                if let Some(h) = head {
                    let blocks = h.saturating_sub(contract.start_block);
                    check.chain_head = Some(h);
                    check.lag_blocks = Some(blocks);
                    if blocks > settings.max_indexer_lag_blocks {
                        check.status = "lagging";
                    }
                }
            }
            Ok(Some(lag)) => {
                // Measured against the node's head, not the head the indexer last saw: a stalled
                // indexer stops updating the latter.
                let chain_head = head.unwrap_or(lag.chain_head).max(lag.chain_head);
                let blocks = chain_head.saturating_sub(lag.indexed_block);
                check.indexed_block = Some(lag.indexed_block);
                check.chain_head = Some(chain_head);
                check.lag_blocks = Some(blocks);
                check.status = if blocks > settings.max_indexer_lag_blocks { "lagging" } else { "ok" };
            }
            Err(_) => {}
        }
        indexer.push(check);
    }

    let min = settings.sponsor_min_balance_wei;
    let sponsors = sponsors
        .into_iter()
        .map(|(address, balance): (Address, Option<U256>)| SponsorCheck {
            address: checksum(address),
            chain_id: chain.chain_id,
            balance_wei: balance.map(|b| b.to_string()),
            balance: balance.map(|b| format_units(b, INTERNAL_DECIMALS)),
            min_balance_wei: min.to_string(),
            low: balance.is_some_and(|b| b < min),
        })
        .collect();
    ChainCheck {
        name: chain.name.clone(),
        chain_id: chain.chain_id,
        rpc: RpcProbe { ok: head.is_some(), latency_ms: rpc_ms, error: rpc_error, block_number: head },
        indexer,
        sponsors,
    }
}
