//! Sponsors, fee quotes and sponsor policies (SPEC §4).
//!
//! - `GET /api/v1/sponsors`: the sponsors the key may use, with native balance, in-flight count,
//!   spend since UTC midnight and policy.
//! - `GET /api/v1/{contract}/fees?Operation=`: estimated gas and cost of an operation before it
//!   is built, and which sponsor would pay.
//! - [`enforce_policy`]: what `meta/execute` checks before queueing a call. Only *new* calls are
//!   checked: the pipeline's fee bumps and cancellations of accepted transactions never are (a
//!   policy must not strand a transaction that holds the sponsor's queue up).
//!
//! Spend is Σ gas used × effective gas price of the sponsor's transactions mined since UTC midnight
//! (read from their receipts once, in the background by [`crate::pricing`], then stored; the signed
//! max fee, an upper bound, until then) plus Σ gas limit × max fee of its transactions still in flight (what they may
//! yet cost). All wei, as decimal strings.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, OnceLock},
};

use alloy::{
    primitives::{Address, U256},
    providers::Provider,
};
use axum::{
    Json,
    extract::{Path, State},
};
use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

use super::ErrorCode;
use super::{
    AppError, AppState, checksum,
    extract::{ApiKey, ApiQuery},
};
use crate::{
    chains::Chain,
    pipeline::{Fees, Sponsor},
    store::SponsorPolicy,
};

/// A sponsor's policy; every value wei, null for no limit.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SponsorPolicyView {
    pub daily_budget: Option<String>,
    pub max_fee_per_gas: Option<String>,
    pub per_key_daily_budget: Option<String>,
}

impl From<&SponsorPolicy> for SponsorPolicyView {
    fn from(p: &SponsorPolicy) -> Self {
        let wei = |v: Option<U256>| v.map(|v| v.to_string());
        Self {
            daily_budget: wei(p.daily_budget),
            max_fee_per_gas: wei(p.max_fee_per_gas),
            per_key_daily_budget: wei(p.per_key_daily_budget),
        }
    }
}

/// One sponsor of `GET /api/v1/sponsors`. Amounts are wei as decimal strings; spend counts since
/// UTC midnight. (Fields in the order of their keys.)
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SponsorView {
    pub address: String,
    /// The chain this entry is about (a sponsor configured on several chains has one each).
    pub chain_id: u64,
    /// Whether this relayer holds the sponsor's key.
    pub configured: bool,
    /// Used when a request names no sponsor.
    pub default: bool,
    /// Transactions pending or submitted.
    pub in_flight: u64,
    /// The same as `SpendToday`, for this API key's calls only.
    pub key_spend_today: String,
    /// Σ gas used × effective gas price of transactions mined today (a transaction mined in the
    /// last second or so may still count at its signed max fee, an upper bound, until its
    /// receipt's price is read in the background).
    pub mined_spend_today: String,
    pub native_balance: String,
    pub policy: Option<SponsorPolicyView>,
    /// Σ gas limit × max fee per gas of transactions in flight.
    pub reserved_in_flight: String,
    /// `MinedSpendToday` + `ReservedInFlight`: what the daily budget is checked against.
    pub spend_today: String,
}

/// `GET /api/v1/sponsors`.
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct SponsorList {
    pub sponsors: Vec<SponsorView>,
}

/// `GET /api/v1/{contract}/fees` (fields in the order of their keys).
#[derive(Debug, Serialize, ToSchema)]
#[serde(rename_all = "PascalCase")]
pub struct FeeQuote {
    pub contract: String,
    /// `EstimatedGas` × `MaxFeePerGas`, wei: at most what the sponsor pays.
    pub estimated_cost: String,
    /// The same in native coin, exact decimal (e.g. `"0.00018"`).
    pub estimated_cost_native: String,
    /// Gas of the relayed transaction.
    pub estimated_gas: u64,
    /// `history` (the most recent mined calls of this operation) or `default` (a measured table).
    pub gas_source: &'static str,
    /// Wei per gas a new transaction would be signed with now.
    pub max_fee_per_gas: String,
    pub max_priority_fee_per_gas: String,
    pub operation: &'static str,
    /// The error code the sponsor's policy would answer an execute with now, or null.
    pub policy_blocks: Option<ErrorCode>,
    /// The sponsor that would pay.
    pub sponsor: String,
}

/// The fees a new transaction would be signed with now (the pipeline's estimate under its cap),
/// as the chain's background pricing last estimated them: no RPC call (see [`crate::pricing`]).
pub(super) async fn current_fees(chain: &Chain) -> Result<Fees, AppError> {
    chain.pricing.fees().await.map_err(AppError::chain)
}

/// `GET /api/v1/sponsors`.
#[utoipa::path(get, path = "/api/v1/sponsors", tag = "Sponsors",
    responses(
        (status = 200, description = "The sponsors this key may use", body = SponsorList),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all)]
pub async fn list(State(state): State<AppState>, key: ApiKey) -> Result<Json<SponsorList>, AppError> {
    let mut out = Vec::new();
    for (c, chain) in state.chains.iter().enumerate() {
        for (i, address) in key.0.sponsors.iter().enumerate() {
            let configured = chain.sponsors.get(address).is_some();
            // Each sponsor on every chain that has it; one configured on no chain is listed once,
            // on the first.
            let nowhere = !state.chains.iter().any(|c| c.sponsors.get(address).is_some());
            let listed_here = configured || (c == 0 && nowhere);
            if !listed_here {
                continue;
            }
            let balance = chain.provider.get_balance(*address).await.map_err(AppError::chain)?;
            let spend = state.store.sponsor_spend(chain.chain_id, *address, None).await?;
            let key_spend = state.store.sponsor_spend(chain.chain_id, *address, Some(key.0.id)).await?;
            let policy = state.store.sponsor_policy(chain.chain_id, *address).await?;
            out.push(SponsorView {
                address: checksum(*address),
                chain_id: chain.chain_id,
                configured,
                default: i == 0,
                in_flight: spend.in_flight,
                key_spend_today: key_spend.total().to_string(),
                mined_spend_today: spend.mined_wei.to_string(),
                native_balance: balance.to_string(),
                policy: policy.as_ref().map(SponsorPolicyView::from),
                reserved_in_flight: spend.reserved_wei.to_string(),
                spend_today: spend.total().to_string(),
            });
        }
    }
    Ok(Json(SponsorList { sponsors: out }))
}

/// Gas of each operation relayed alone through `bySig` before the relayer has its own history
/// (measured on Anvil, see BENCHMARKS.md, rounded up; a deposit includes its permit).
const DEFAULT_GAS: &[(&str, u64)] =
    &[("deposit", 140_000), ("withdraw", 105_000), ("pay", 90_000), ("subscribe", 185_000), ("unsubscribe", 105_000)];

#[derive(Debug, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct FeesQuery {
    #[serde(alias = "operation")]
    operation: Option<String>,
    #[serde(alias = "sponsor")]
    sponsor: Option<String>,
}

/// `GET /api/v1/{contract}/fees?Operation=`.
#[utoipa::path(get, path = "/api/v1/{contract}/fees", tag = "Sponsors",
    params(
        ("contract" = String, Path, description = "Deployment name from GET /api/v1/contracts (any case)"),
        ("Operation" = String, Query, description = "The operation to quote, in lower case", pattern = "^(deposit|withdraw|pay|subscribe|unsubscribe)$"),
        ("Sponsor" = Option<String>, Query, description = "Sponsor to quote for (empty or absent: the key's first)", pattern = "^(0[xX][0-9a-fA-F]{40})?$"),
    ),
    responses(
        (status = 200, description = "Estimated gas and cost in wei", body = FeeQuote),
        (status = 400, description = "`unknown_contract`, `missing_field`, `unknown_operation`, `invalid_address`, `invalid_query`", body = crate::api::error::ErrorBody),
        (status = 401, description = "`missing_api_key`, `invalid_api_key`", body = crate::api::error::ErrorBody),
        (status = 403, description = "`sponsor_not_allowed`", body = crate::api::error::ErrorBody),
        (status = 422, description = "`sponsor_unavailable`", body = crate::api::error::ErrorBody),
        (status = 503, description = "`chain_unavailable`", body = crate::api::error::ErrorBody),
    ),
    security(("api_key" = [])))]
#[tracing::instrument(skip_all, fields(contract = %contract))]
pub async fn quote(
    State(state): State<AppState>,
    key: ApiKey,
    Path(contract): Path<String>,
    ApiQuery(q): ApiQuery<FeesQuery>,
) -> Result<Json<FeeQuote>, AppError> {
    let contract = state.contract(&contract)?;
    let op = q.operation.as_deref().filter(|s| !s.is_empty()).ok_or_else(|| AppError::missing("operation"))?;
    let (operation, default_gas) = DEFAULT_GAS.iter().find(|(name, _)| *name == op).copied().ok_or_else(|| {
        let known: Vec<&str> = DEFAULT_GAS.iter().map(|(n, _)| *n).collect();
        AppError::new(ErrorCode::UnknownOperation, format!("operation {op:?} is not one of {}", known.join(", ")))
    })?;
    let sponsor = state.sponsor_for(contract.chain, &key, q.sponsor.as_deref())?;
    let chain = contract.chain;
    let history = state.store.recent_operation_gas(chain.chain_id, contract.address, operation).await?;
    let gas = history.unwrap_or(default_gas);
    let fees = current_fees(chain).await?;
    let cost = U256::from(gas) * U256::from(fees.max_fee_per_gas);
    let policy = state.store.sponsor_policy(chain.chain_id, sponsor.address()).await?;
    let verdict = match &policy {
        Some(p) => check(&state, chain, &key, &sponsor, p, fees.max_fee_per_gas, cost).await.err(),
        None => None,
    };
    // Only a policy's own refusal names a code; a failure reading the policy's inputs is null.
    let policy_blocks = verdict.as_ref().and_then(|e| match e {
        AppError::Client { code, .. } => Some(*code),
        _ => None,
    });
    Ok(Json(FeeQuote {
        contract: contract.name.clone(),
        estimated_cost: cost.to_string(),
        estimated_cost_native: crate::amount::format_units(cost, 18),
        estimated_gas: gas,
        gas_source: if history.is_some() { "history" } else { "default" },
        max_fee_per_gas: fees.max_fee_per_gas.to_string(),
        max_priority_fee_per_gas: fees.max_priority_fee_per_gas.to_string(),
        operation,
        policy_blocks,
        sponsor: checksum(sponsor.address()),
    }))
}

/// The policy checks of one new call costing up to `cost` wei at `max_fee_per_gas`.
async fn check(
    state: &AppState,
    chain: &Chain,
    key: &ApiKey,
    sponsor: &Sponsor,
    policy: &SponsorPolicy,
    max_fee_per_gas: u128,
    cost: U256,
) -> Result<(), AppError> {
    let address = sponsor.address();
    if let Some(cap) = policy.max_fee_per_gas
        && U256::from(max_fee_per_gas) > cap
    {
        return Err(AppError::new(
            ErrorCode::SponsorFeeCapExceeded,
            format!(
                "the network asks {max_fee_per_gas} wei per gas; sponsor {address} pays at most {cap}; retry later"
            ),
        ));
    }
    if let Some(budget) = policy.daily_budget {
        let spent = state.store.sponsor_spend(chain.chain_id, address, None).await?.total();
        if spent.saturating_add(cost) > budget {
            return Err(AppError::new(
                ErrorCode::SponsorDailyBudgetExceeded,
                format!(
                    "sponsor {address} has spent or reserved {spent} of its daily budget of {budget} wei; this call may cost {cost}"
                ),
            ));
        }
    }
    if let Some(budget) = policy.per_key_daily_budget {
        let spent = state.store.sponsor_spend(chain.chain_id, address, Some(key.0.id)).await?.total();
        if spent.saturating_add(cost) > budget {
            return Err(AppError::new(
                ErrorCode::KeyBudgetExceeded,
                format!(
                    "this API key has spent or reserved {spent} of its daily budget of {budget} wei on sponsor {address}; this call may cost {cost}"
                ),
            ));
        }
    }
    Ok(())
}

/// Serialises budget checks per sponsor within this process, from the check until the call is
/// queued (its reservation then counts), so concurrent executes cannot both take the last room.
fn budget_lock(sponsor: Address) -> Arc<tokio::sync::Mutex<()>> {
    static LOCKS: OnceLock<Mutex<HashMap<Address, Arc<tokio::sync::Mutex<()>>>>> = OnceLock::new();
    let mut map = LOCKS.get_or_init(Default::default).lock().unwrap_or_else(|e| e.into_inner());
    map.entry(sponsor).or_default().clone()
}

/// Held by `execute` until its call is queued (see [`enforce_policy`]).
pub type BudgetGuard = Option<tokio::sync::OwnedMutexGuard<()>>;

/// Checks `sponsor`'s `policy` (as admission read it, beside the call's record) for a new call of
/// `gas_limit` gas: 422 `sponsor_fee_cap_exceeded`, 429 `sponsor_daily_budget_exceeded` or
/// `key_budget_exceeded`. Without a policy, nothing to do.
/// With a budget, the returned guard must be held until the call is queued.
pub async fn enforce_policy(
    state: &AppState,
    chain: &Chain,
    key: &ApiKey,
    sponsor: &Sponsor,
    gas_limit: u64,
    policy: Option<SponsorPolicy>,
) -> Result<BudgetGuard, AppError> {
    let Some(policy) = policy else {
        return Ok(None);
    };
    // Read before the lock, and from the background pricing's cache: the lock is held for
    // database reads only, never for a round trip to the node.
    let fees = current_fees(chain).await?;
    let guard = if policy.daily_budget.is_some() || policy.per_key_daily_budget.is_some() {
        Some(budget_lock(sponsor.address()).lock_owned().await)
    } else {
        None
    };
    let cost = U256::from(gas_limit) * U256::from(fees.max_fee_per_gas);
    check(state, chain, key, sponsor, &policy, fees.max_fee_per_gas, cost).await?;
    Ok(guard)
}
