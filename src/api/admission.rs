//! Admission: what `meta/execute` checks so that no client can drain a sponsor (issue 12,
//! review S1/S12). In order:
//!
//! 1. the calldata's size (`max_calldata_bytes`) and its strict ABI decoding (in
//!    [`crate::chain::calls`]): 400 `calldata_too_large` / `non_canonical_calldata`;
//! 2. the simulated gas against a cap per operation kind (`gas_base` plus the sum of
//!    `gas_per_operation` over the call's operations): 422 `gas_cap_exceeded`;
//! 3. in one short Postgres transaction under advisory locks on the API key and the signer, the
//!    signer's and the key's reputation and daily budgets; an admitted call's worst-case cost is
//!    reserved in that same transaction and counts until its row is queued, so concurrent
//!    executes in any number of `serve` processes on one database cannot both take the last room:
//!    - the same signed call (same EIP-712 digest) that reverted on chain is not relayed again
//!      before `revert_cooldown_secs`: 429 `call_cooling_down`;
//!    - reverts on chain within `reputation_window_secs` count against the signer and the key
//!      (like an ERC-4337 bundler's reputation, ERC-7562): from `throttle_after_reverts` on, one
//!      call per `throttle_interval_secs` (429 `signer_throttled` / `key_throttled`); from
//!      `ban_after_reverts` on, none (403 `signer_banned` / `key_banned`) until old reverts
//!      leave the window;
//!    - the key's and the signer's spend since UTC midnight (gas used, or the gas limit while in
//!      flight, at the attempt's max fee: an upper bound) plus this call's worst case must stay
//!      within `key_daily_budget_wei` / `signer_daily_budget_wei`: 429 `key_daily_budget_exceeded`
//!      / `signer_daily_budget_exceeded`.
//!
//! Everything is stored in Postgres (the relayed transactions themselves), so the limits hold
//! across replicas and restarts.

use std::collections::BTreeMap;

use alloy::primitives::{Address, B256, U256};

use super::AppError;
use super::ErrorCode;
use crate::store::{AdmissionRecord, Reservation, SponsorPolicy, Store};

/// Limits of `[admission]` (defaults are on; see `streampay.example.toml`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AdmissionSettings {
    /// Largest `Data` accepted, in bytes.
    pub max_calldata_bytes: usize,
    /// Gas allowed for one relayed call besides its operations: the 21,000 base, calldata,
    /// signature check, nonce and an optional permit.
    pub gas_base: u64,
    /// Gas allowed per user operation of the call (keys: `deposit`, `pay`, …). An operation
    /// missing here gets `gas_default_operation`.
    pub gas_per_operation: BTreeMap<String, u64>,
    pub gas_default_operation: u64,
    /// Per API key, wei per UTC day (`None`: unlimited).
    pub key_daily_budget_wei: Option<U256>,
    /// Per signer, wei per UTC day (`None`: unlimited).
    pub signer_daily_budget_wei: Option<U256>,
    /// A signed call that reverted on chain is refused this long.
    pub revert_cooldown_secs: u64,
    /// Reverts count against a signer or key this long.
    pub reputation_window_secs: u64,
    /// From this many reverts in the window: one call per `throttle_interval_secs`.
    pub throttle_after_reverts: u32,
    pub throttle_interval_secs: u64,
    /// From this many reverts in the window: refused.
    pub ban_after_reverts: u32,
}

impl AdmissionSettings {
    /// These settings with a key's own daily budgets where they are tighter.
    pub fn for_key(&self, bounds: &crate::store::KeyBounds) -> std::borrow::Cow<'_, Self> {
        let tighter = |ours: Option<U256>, key: Option<U256>| match (ours, key) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        };
        if bounds.daily_budget_wei.is_none() && bounds.signer_daily_budget_wei.is_none() {
            return std::borrow::Cow::Borrowed(self);
        }
        std::borrow::Cow::Owned(Self {
            key_daily_budget_wei: tighter(self.key_daily_budget_wei, bounds.daily_budget_wei),
            signer_daily_budget_wei: tighter(self.signer_daily_budget_wei, bounds.signer_daily_budget_wei),
            ..self.clone()
        })
    }
}

impl Default for AdmissionSettings {
    fn default() -> Self {
        // Generous caps, about twice the measured cost of each operation (BENCHMARKS.md: a
        // new-receiver payment 25k in a batch, a first subscribe 107k, a gasless deposit 138k in all).
        let gas_per_operation = [
            ("deposit", 150_000),
            ("depositFor", 150_000),
            ("withdraw", 100_000),
            ("withdrawTo", 100_000),
            ("pay", 60_000),
            ("subscribe", 220_000),
            ("unsubscribe", 120_000),
        ]
        .into_iter()
        .map(|(k, v)| (k.to_string(), v))
        .collect();
        Self {
            max_calldata_bytes: 32 * 1024,
            gas_base: 150_000,
            gas_per_operation,
            gas_default_operation: 150_000,
            // 2 native coins per key and 0.2 per signer per day: hundreds of calls at today's
            // mainnet fees, thousands on an L2; set them to what your sponsors can afford.
            key_daily_budget_wei: Some(U256::from(2_000_000_000_000_000_000u128)),
            signer_daily_budget_wei: Some(U256::from(200_000_000_000_000_000u128)),
            revert_cooldown_secs: 3600,
            reputation_window_secs: 86_400,
            throttle_after_reverts: 3,
            throttle_interval_secs: 60,
            ban_after_reverts: 10,
        }
    }
}

impl AdmissionSettings {
    /// The gas a call of `operations` may use.
    pub fn gas_cap(&self, operations: &[&str]) -> u64 {
        operations.iter().fold(self.gas_base, |acc, op| {
            acc.saturating_add(self.gas_per_operation.get(*op).copied().unwrap_or(self.gas_default_operation))
        })
    }

    /// 400 `calldata_too_large` for `Data` over the cap.
    pub fn check_size(&self, data: &[u8]) -> Result<(), AppError> {
        if data.len() > self.max_calldata_bytes {
            return Err(AppError::new(
                ErrorCode::CalldataTooLarge,
                format!("Data is {} bytes; at most {} are relayed", data.len(), self.max_calldata_bytes),
            ));
        }
        Ok(())
    }

    /// 422 `gas_cap_exceeded` when the simulated `gas` is over the cap of `operations`.
    pub fn check_gas(&self, operations: &[&str], gas: u64) -> Result<(), AppError> {
        let cap = self.gas_cap(operations);
        if gas > cap {
            return Err(AppError::new(
                ErrorCode::GasCapExceeded,
                format!("the call needs {gas} gas; {} may use at most {cap}", operations.join(", ")),
            ));
        }
        Ok(())
    }
}

/// Who is asking: the call's signer, its API key and the signed call's digest.
#[derive(Debug, Clone, Copy)]
pub struct Applicant {
    pub chain_id: u64,
    pub api_key_id: i64,
    pub signer: Address,
    /// The sponsor the call would go out from (its policy is read with the record).
    pub sponsor: Address,
    pub digest: B256,
}

/// Checks cool-down, reputation and budgets for a call that may cost up to `cost` wei and
/// reserves that cost, atomically across processes (see [`Store::admit_and_reserve`]); answers
/// the reservation and the sponsor's policy (read in the same statement as the record). The
/// reservation goes with the call to the queue ([`crate::store::NewTransaction::reservation`]),
/// or is released if the call is not queued. With no daily
/// budget for the key or the signer there is nothing to reserve: the cool-down and reputation
/// are read in one statement, without the advisory locks ([`Store::admission_reputation`]).
pub async fn admit(
    store: &Store,
    settings: &AdmissionSettings,
    who: Applicant,
    cost: U256,
) -> Result<(Reservation, Option<SponsorPolicy>), AppError> {
    if settings.key_daily_budget_wei.is_none() && settings.signer_daily_budget_wei.is_none() {
        let (record, none) = store
            .admission_reputation(
                who.chain_id,
                who.api_key_id,
                who.signer,
                who.sponsor,
                who.digest,
                settings.reputation_window_secs,
            )
            .await?;
        check(settings, &record, cost)?;
        return Ok((none, record.sponsor_policy));
    }
    let mut policy = None;
    let reservation = store
        .admit_and_reserve(
            who.chain_id,
            who.api_key_id,
            who.signer,
            who.sponsor,
            who.digest,
            settings.reputation_window_secs,
            cost,
            |r| {
                policy = r.sponsor_policy;
                check(settings, r, cost)
            },
        )
        .await??;
    Ok((reservation, policy))
}

fn check(settings: &AdmissionSettings, r: &AdmissionRecord, cost: U256) -> Result<(), AppError> {
    if let Some(ago) = r.digest_reverted_secs_ago
        && ago < settings.revert_cooldown_secs
    {
        return Err(AppError::new(
            ErrorCode::CallCoolingDown,
            format!(
                "this signed call reverted on chain {ago} s ago; it is not relayed again for {} s",
                settings.revert_cooldown_secs - ago
            ),
        ));
    }
    let subjects = [
        ("signer", r.signer_reverts, r.signer_last_secs_ago, ErrorCode::SignerThrottled, ErrorCode::SignerBanned),
        ("API key", r.key_reverts, r.key_last_secs_ago, ErrorCode::KeyThrottled, ErrorCode::KeyBanned),
    ];
    for (what, reverts, last_ago, throttled, banned) in subjects {
        if reverts >= u64::from(settings.ban_after_reverts) {
            return Err(AppError::new(
                banned,
                format!(
                    "this {what} had {reverts} relayed calls revert on chain in the last {} s; no call is relayed for it until they age out",
                    settings.reputation_window_secs
                ),
            ));
        }
        if reverts >= u64::from(settings.throttle_after_reverts)
            && last_ago.is_some_and(|ago| ago < settings.throttle_interval_secs)
        {
            return Err(AppError::new(
                throttled,
                format!(
                    "this {what} had {reverts} relayed calls revert on chain recently: one call per {} s",
                    settings.throttle_interval_secs
                ),
            ));
        }
    }
    let budgets = [
        ("API key", settings.key_daily_budget_wei, r.key_spent_wei, ErrorCode::KeyDailyBudgetExceeded),
        ("signer", settings.signer_daily_budget_wei, r.signer_spent_wei, ErrorCode::SignerDailyBudgetExceeded),
    ];
    for (what, budget, spent, code) in budgets {
        if let Some(budget) = budget
            && spent.saturating_add(cost) > budget
        {
            return Err(AppError::new(
                code,
                format!(
                    "this {what} has spent or reserved {spent} wei of its daily budget of {budget} wei (UTC day); this call may cost {cost}"
                ),
            ));
        }
    }
    Ok(())
}
