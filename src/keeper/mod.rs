//! Liquidation keeper (SPEC §2, §5): watches the indexed accounts, predicts the chain time at
//! which each one becomes liquidatable, and from then on liquidates it from a sponsor through
//! the persistent pipeline queue (so the sponsor's nonces stay gap-free and a crash loses
//! nothing). See `docs/keeper.md`.
//!
//! # Prediction
//!
//! `StreamPay.isLiquidatable(a)` holds when `a` has streams and its live balance
//! `b + (income − outgoing)·(t − updated)` is below one `liquidationWindow` `W` of its GROSS
//! outgoing rate: `live < outgoing·W` (income is revocable and does not count; v2 of the
//! contract). With `c = outgoing·W`: if `b < c` already, the first such second is `u` itself;
//! otherwise, with a net outflow `d = outgoing − income > 0`, `b − d·(t − u) < c` first holds at
//! `u + ⌊(b − c) / d⌋ + 1`; without a net outflow the balance never falls, so never.
//! [`liquidatable_at`] computes it exactly in 256-bit integers from the index's `idx_accounts`
//! row (stored balance, rates, `updated`), which stay valid until the account's next event.
//!
//! # Sending
//!
//! Each pass reads the head block's timestamp; every account whose predicted time has come is
//! checked on chain with `isLiquidatable` (the index may lag: a deposit it has not seen yet
//! rescues the account) and `eth_estimateGas` from the sponsor, then `liquidate(account)` is
//! queued. Never twice: an account is liquidated once per *episode*, identified by its indexed
//! `updated` time (any event on the account changes it), which is stored as the queued row's
//! `meta_nonce` next to the `liquidate(account)` calldata; a row for the same calldata and
//! episode that is not `failed`/`expired`/`replaced` means it is already in hand. Only one
//! replica runs the keeper at a time (a Postgres advisory lock held on a dedicated connection;
//! if that replica dies its connection closes and another takes over).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use alloy::{
    network::TransactionBuilder,
    primitives::{Address, I256, U256},
    providers::Provider,
    rpc::types::TransactionRequest,
    sol_types::SolCall,
};
use anyhow::Context;

use tokio_util::sync::CancellationToken;

use crate::{
    chain::{Deployment, StreamPay},
    chains::Chain,
    observability,
    store::{self, NewTransaction, Store},
};

/// Tunables of the keeper (config section `[keeper]`).
#[derive(Debug, Clone)]
pub struct KeeperSettings {
    /// Run the keeper in `serve` (one replica at a time runs it).
    pub enabled: bool,
    /// Time between passes.
    pub poll_interval: Duration,
    /// The sponsor that sends liquidations (and receives their rewards); `None`: the first
    /// configured sponsor.
    pub sponsor: Option<Address>,
    /// Most liquidations queued per deployment per pass (the most overdue first).
    pub max_per_tick: usize,
    /// Seconds of chain time a queued liquidation may wait for inclusion before the pipeline
    /// cancels it (the next pass queues a fresh one if the account is still liquidatable).
    pub deadline_secs: u64,
    /// What one native coin is worth in the deployment's token, in 18-decimal fixed point
    /// (`"3000"` → 3000e18): converts a liquidation's gas cost into the token its reward is in.
    pub native_price_in_token: U256,
    /// A liquidation is sent only when its reward is at least this percentage of its worst-case
    /// gas cost (gas limit × max fee), converted at `native_price_in_token`.
    pub min_profit_percent: u32,
    /// The keeper's own spend per UTC day, wei (its liquidations' gas used, or gas limit while
    /// in flight, at their max fee); `None`: unlimited.
    pub daily_budget_wei: Option<U256>,
}

impl Default for KeeperSettings {
    fn default() -> Self {
        Self {
            enabled: true,
            poll_interval: Duration::from_secs(5),
            sponsor: None,
            max_per_tick: 20,
            deadline_secs: 600,
            native_price_in_token: U256::from(3000u64) * U256::from(10u64).pow(U256::from(18u64)),
            min_profit_percent: 150,
            daily_budget_wei: Some(U256::from(500_000_000_000_000_000u128)),
        }
    }
}

/// Whether a `reward` (internal 18-decimal token units) pays for `cost_wei` of gas with the
/// margin: `reward ≥ cost × price × percent / 100`, with `price` the token value of one native
/// coin in 18-decimal fixed point. Exact integer arithmetic (saturating: an absurd cost is never
/// profitable).
pub fn profitable(reward: U256, cost_wei: U256, price: U256, percent: u32) -> bool {
    let one = U256::from(10u64).pow(U256::from(18u64));
    let needed = cost_wei.saturating_mul(price).saturating_mul(U256::from(percent)) / one / U256::from(100u64);
    reward >= needed
}

/// The first chain timestamp `t ≥ updated` at which an account with streams and this indexed
/// state is liquidatable under a window of `window` seconds, mirroring `StreamPay._shortfall`
/// (cover = one window of the GROSS outgoing rate) and `_liveBalance` exactly; `None` if it never
/// becomes so while the state holds (balance at or above the cover and no net outflow), or only
/// beyond `u64` seconds.
pub fn liquidatable_at(balance: I256, income: U256, outgoing: U256, updated: u64, window: U256) -> Option<u64> {
    if outgoing.is_zero() {
        // No streams: the contract never liquidates (only a negative balance would count).
        return balance.is_negative().then_some(updated);
    }
    let cover = outgoing.checked_mul(window)?;
    let Ok(cover) = I256::try_from(cover) else { return None };
    // x = b − outgoing·W: how much the balance exceeds one window of gross outflow.
    let x = balance.checked_sub(cover)?;
    if x.is_negative() {
        return Some(updated);
    }
    if outgoing <= income {
        // The balance never falls: the account stays covered while this state holds.
        return None;
    }
    let d = outgoing - income;
    let Ok(d_signed) = I256::try_from(d) else { return None };
    // x ≥ 0, d > 0: floor division.
    let seconds = (x / d_signed).into_raw().checked_add(U256::from(1))?;
    u64::try_from(seconds).ok().and_then(|s| updated.checked_add(s))
}

/// One indexed account at risk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Watched {
    pub account: Address,
    /// `idx_accounts.updated`: identifies the state the prediction is based on.
    pub updated: u64,
    /// Predicted first liquidatable chain time.
    pub due: u64,
}

/// A liquidation the keeper queued.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Queued {
    pub contract: Address,
    pub account: Address,
    /// The pipeline row (`relay_transactions.id`).
    pub transaction_id: i64,
    pub hash: alloy::primitives::B256,
}

/// What one pass did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Pass {
    /// Chain time of the head block the pass judged by.
    pub chain_time: u64,
    /// Accounts with a predicted liquidation time, over all deployments.
    pub watched: Vec<Watched>,
    pub queued: Vec<Queued>,
    /// Due by the index but not liquidatable on chain (the index lags behind a rescue).
    pub skipped: Vec<Address>,
    /// Liquidatable, but the reward does not cover the gas with the margin (dust).
    pub unprofitable: Vec<Address>,
    /// Liquidatable and profitable, but the keeper's daily budget is spent.
    pub over_budget: Vec<Address>,
}

/// The keeper; [`Keeper::spawn`] runs it in the background, [`Keeper::pass`] runs one pass.
pub struct Keeper {
    store: Store,
    chain: Arc<Chain>,
    settings: KeeperSettings,
    sponsor: Address,
    windows: Mutex<HashMap<Address, U256>>,
}

impl Keeper {
    /// The keeper of `chain`'s deployments, liquidating through its pipeline.
    pub fn new(store: Store, chain: Arc<Chain>, settings: KeeperSettings) -> anyhow::Result<Self> {
        let sponsor = match settings.sponsor {
            Some(s) => {
                anyhow::ensure!(chain.sponsors.get(&s).is_some(), "keeper.sponsor {s} is not a configured sponsor");
                s
            }
            None => *chain.sponsors.addresses().first().context("the keeper needs a configured sponsor")?,
        };
        Ok(Self { store, chain, settings, sponsor, windows: Mutex::default() })
    }

    pub fn sponsor(&self) -> Address {
        self.sponsor
    }

    /// Runs passes every `poll_interval` until `stop` is cancelled (between passes), on the one
    /// replica holding the keeper lock (released with its connection when this returns).
    pub async fn run(&self, stop: CancellationToken) -> anyhow::Result<()> {
        let key = format!("streampay-keeper:{}", self.chain.chain_id);
        // The connection holding (or trying for) the lock; the lock lives as long as it does.
        let mut conn: Option<sqlx::PgConnection> = None;
        let mut locked = false;
        loop {
            if conn.is_none() {
                locked = false;
                conn = self.store.pool().acquire().await.ok().map(|c| c.detach());
            }
            if let Some(c) = conn.as_mut() {
                let check = if locked {
                    // Still connected, so still holding it.
                    store::keeper::still_connected(c).await
                } else {
                    store::keeper::try_lock(c, &key).await
                };
                match check {
                    Ok(true) => {
                        if !locked {
                            tracing::info!(sponsor = %self.sponsor, "keeper started (this replica holds the keeper lock)");
                        }
                        locked = true;
                    }
                    Ok(false) => {}
                    Err(e) => {
                        tracing::warn!(error = %e, "keeper lock connection lost");
                        conn = None;
                        locked = false;
                    }
                }
            }
            if locked {
                match self.pass().await {
                    Ok(p) if !p.queued.is_empty() || !p.skipped.is_empty() => {
                        tracing::info!(
                            queued = p.queued.len(),
                            skipped = p.skipped.len(),
                            watched = p.watched.len(),
                            "keeper pass"
                        );
                    }
                    Ok(_) => {}
                    Err(e) => tracing::warn!(error = format!("{e:#}"), "keeper pass failed"),
                }
            }
            tokio::select! {
                _ = stop.cancelled() => return Ok(()),
                _ = tokio::time::sleep(self.settings.poll_interval) => {}
            }
        }
    }

    /// One pass over every deployment.
    pub async fn pass(&self) -> anyhow::Result<Pass> {
        let block = self
            .chain
            .provider
            .get_block_by_number(alloy::eips::BlockNumberOrTag::Latest)
            .await
            .context("Failed to read the latest block")?
            .context("no latest block")?;
        let mut pass = Pass { chain_time: block.header.timestamp, ..Pass::default() };
        for contract in &self.chain.deployments {
            if let Err(e) = self.pass_contract(contract, &mut pass).await {
                metrics::counter!(observability::KEEPER_ERRORS, "contract" => contract.name.clone()).increment(1);
                return Err(e.context(format!("keeper pass over {}", contract.name)));
            }
        }
        Ok(pass)
    }

    async fn window(&self, contract: Address) -> anyhow::Result<U256> {
        if let Some(w) = self.windows.lock().unwrap_or_else(|e| e.into_inner()).get(&contract) {
            return Ok(*w);
        }
        let w = StreamPay::new(contract, &self.chain.provider)
            .liquidationWindow()
            .call()
            .await
            .context("Failed to read liquidationWindow()")?;
        self.windows.lock().unwrap_or_else(|e| e.into_inner()).insert(contract, w);
        Ok(w)
    }

    /// Indexed accounts with outgoing streams and their predicted liquidation time.
    pub async fn watched(&self, contract: Address) -> anyhow::Result<Vec<Watched>> {
        let window = self.window(contract).await?;
        let rows = store::keeper::accounts_with_outgoing_streams(self.store.pool(), self.chain.chain_id, contract)
            .await
            .context("Failed to read the indexed accounts")?;
        let mut watched = Vec::new();
        for r in rows {
            if let Some(due) = liquidatable_at(r.balance, r.income_rate, r.outgoing_rate, r.updated, window) {
                watched.push(Watched { account: r.account, updated: r.updated, due });
            }
        }
        watched.sort_by_key(|w| (w.due, w.account));
        Ok(watched)
    }

    async fn pass_contract(&self, contract: &Deployment, pass: &mut Pass) -> anyhow::Result<()> {
        let watched = self.watched(contract.address).await?;
        metrics::gauge!(observability::KEEPER_WATCHED, "contract" => contract.name.clone()).set(watched.len() as f64);
        let mut queued = 0;
        for w in watched.iter().filter(|w| w.due <= pass.chain_time) {
            if queued >= self.settings.max_per_tick {
                break;
            }
            let calldata: alloy::primitives::Bytes =
                StreamPay::liquidateCall { account: w.account }.abi_encode().into();
            if self.in_hand(contract.address, &calldata, w.updated).await? {
                continue;
            }
            let sp = StreamPay::new(contract.address, &self.chain.provider);
            if !sp.isLiquidatable(w.account).call().await.context("Failed to call isLiquidatable")? {
                tracing::debug!(account = %w.account, due = w.due, "predicted liquidatable but the chain disagrees (index behind)");
                pass.skipped.push(w.account);
                continue;
            }
            let request = TransactionRequest::default()
                .with_from(self.sponsor)
                .with_to(contract.address)
                .with_input(calldata.clone());
            let gas = match self.chain.provider.estimate_gas(request).await {
                Ok(g) => g,
                Err(e) => {
                    // Liquidated by someone else in the meantime, most likely.
                    tracing::info!(account = %w.account, error = %e, "liquidation does not simulate; skipped");
                    pass.skipped.push(w.account);
                    continue;
                }
            };
            // Profitability and the keeper's own budget (review S5): dust is never liquidated.
            let gas_limit = crate::chain::gas_limit_for(gas, crate::chain::LIQUIDATION_GAS_MARGIN);
            let max_fee =
                self.chain.provider.estimate_eip1559_fees().await.context("Failed to estimate fees")?.max_fee_per_gas;
            let cost_wei = U256::from(gas_limit) * U256::from(max_fee);
            let reward = sp.balanceOf(w.account).call().await.context("Failed to call balanceOf")?;
            if !profitable(reward, cost_wei, self.settings.native_price_in_token, self.settings.min_profit_percent) {
                tracing::debug!(account = %w.account, %reward, %cost_wei, "liquidation reward does not cover its gas; skipped");
                metrics::counter!(observability::KEEPER_UNPROFITABLE, "contract" => contract.name.clone()).increment(1);
                pass.unprofitable.push(w.account);
                continue;
            }
            if let Some(budget) = self.settings.daily_budget_wei {
                let spent = self.spent_today().await?;
                if spent.saturating_add(cost_wei) > budget {
                    tracing::warn!(account = %w.account, %spent, %budget, "the keeper's daily budget is spent; liquidation skipped");
                    pass.over_budget.push(w.account);
                    continue;
                }
            }
            let started = Instant::now();
            let q = self
                .chain
                .pipeline
                .enqueue(NewTransaction {
                    chain_id: self.chain.chain_id,
                    contract: contract.address,
                    api_key_id: 0,
                    signer: self.sponsor,
                    meta_nonce: w.updated,
                    meta_nonce_type: crate::chain::traits::NonceType::Account,
                    call_digest: None,
                    deadline: pass.chain_time + self.settings.deadline_secs,
                    sponsor: self.sponsor,
                    calldata,
                    // Streams are stopped in a loop: leave room for state changes since the estimate.
                    gas_limit,
                    history: None,
                    reservation: crate::store::Reservation::NONE,
                })
                .await
                .context("Failed to queue the liquidation")?;
            metrics::counter!(observability::KEEPER_LIQUIDATIONS, "contract" => contract.name.clone()).increment(1);
            tracing::info!(contract = %contract.name, account = %w.account, due = w.due, chain_time = pass.chain_time,
                id = q.id, hash = %q.hash, queue_ms = started.elapsed().as_millis() as u64, "liquidation queued");
            pass.queued.push(Queued {
                contract: contract.address,
                account: w.account,
                transaction_id: q.id,
                hash: q.hash,
            });
            queued += 1;
        }
        pass.watched.extend(watched);
        Ok(())
    }

    /// The keeper's spend since UTC midnight, wei: its rows' gas used (gas limit while in flight)
    /// at their latest attempt's max fee.
    async fn spent_today(&self) -> anyhow::Result<U256> {
        store::keeper::spent_today(self.store.pool(), self.chain.chain_id, self.sponsor)
            .await
            .context("Failed to total the keeper's spend")
    }

    /// Whether a liquidation of this episode is queued, in flight or done.
    async fn in_hand(&self, contract: Address, calldata: &[u8], updated: u64) -> anyhow::Result<bool> {
        store::keeper::liquidation_in_hand(self.store.pool(), self.chain.chain_id, contract, calldata, updated)
            .await
            .context("Failed to look for a queued liquidation")
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn profitable_needs_the_reward_to_cover_gas_times_price_with_the_margin() {
        let e18 = U256::from(10u64).pow(U256::from(18u64));
        let price = U256::from(3000u64) * e18; // 1 native = 3000 tokens
        let cost = U256::from(200_000u64) * U256::from(2_000_000_000u64); // 200k gas at 2 gwei = 4e14 wei
        // 4e14 wei × 3000 = 1.2 tokens; with 150%: 1.8 tokens (1.8e18 internal).
        let needed = U256::from(18u64) * e18 / U256::from(10u64);
        assert!(profitable(needed, cost, price, 150));
        assert!(!profitable(needed - U256::from(1u64), cost, price, 150));
        assert!(!profitable(U256::from(100_000_000_000u64), cost, price, 150), "dust (1e11 internal)");
    }

    use super::*;

    fn i(v: i128) -> I256 {
        I256::try_from(v).unwrap()
    }
    fn u(v: u128) -> U256 {
        U256::from(v)
    }

    /// The contract's rule (v2, gross), evaluated at `t` (reference for the closed form).
    fn liquidatable(balance: I256, income: U256, outgoing: U256, updated: u64, window: U256, t: u64) -> bool {
        let live =
            balance + (I256::try_from(income).unwrap() - I256::try_from(outgoing).unwrap()) * i((t - updated) as i128);
        if outgoing.is_zero() { live.is_negative() } else { live < I256::try_from(outgoing * window).unwrap() }
    }

    #[test]
    fn exactly_one_window_left_is_safe_until_the_next_second() {
        // d = 10/s, W = 100 s: b = 1000 = d·W exactly.
        let at = liquidatable_at(i(1000), u(0), u(10), 5_000, u(100)).unwrap();
        assert_eq!(at, 5_001);
        assert!(!liquidatable(i(1000), u(0), u(10), 5_000, u(100), at - 1));
        assert!(liquidatable(i(1000), u(0), u(10), 5_000, u(100), at));
    }

    #[test]
    fn below_one_window_is_liquidatable_at_once() {
        assert_eq!(liquidatable_at(i(999), u(0), u(10), 7, u(100)), Some(7));
        assert_eq!(liquidatable_at(i(-5), u(3), u(10), 7, u(100)), Some(7));
    }

    #[test]
    fn floor_division_lands_on_the_first_liquidatable_second() {
        // x = b − out·W = 1_000_000 − 10·50 = 999_500; d = 7; ⌊999_500 / 7⌋ = 142_785 (remainder 5).
        let (b, inc, out, upd, w) = (i(1_000_000), u(3), u(10), 1_700_000_000u64, u(50));
        let at = liquidatable_at(b, inc, out, upd, w).unwrap();
        assert_eq!(at, upd + 142_786);
        assert!(!liquidatable(b, inc, out, upd, w, at - 1));
        assert!(liquidatable(b, inc, out, upd, w, at));
        // Against brute force on a grid of small states.
        for b in [0i128, 1, 6, 7, 8, 69, 70, 71, 1_234] {
            for (inc, out) in [(0u128, 1u128), (0, 7), (2, 9), (5, 6)] {
                for w in [1u128, 3, 10] {
                    let at = liquidatable_at(i(b), u(inc), u(out), 100, u(w)).unwrap();
                    let first = (100..).find(|t| liquidatable(i(b), u(inc), u(out), 100, u(w), *t)).unwrap();
                    assert_eq!(at, first, "b={b} inc={inc} out={out} w={w}");
                }
            }
        }
    }

    #[test]
    fn income_is_not_collateral() {
        // Income covering the outflow does not help: below one window of the gross rate is
        // liquidatable at once (v1 counted net outflow and would have said "never").
        assert_eq!(liquidatable_at(i(0), u(10), u(10), 9, u(100)), Some(9));
        assert_eq!(liquidatable_at(i(999), u(11), u(10), 9, u(100)), Some(9));
        assert_eq!(liquidatable_at(i(-1), u(10), u(10), 9, u(100)), Some(9));
        // Covered and not falling: never while the state holds.
        assert_eq!(liquidatable_at(i(1_000), u(10), u(10), 9, u(100)), None);
        assert_eq!(liquidatable_at(i(1_000), u(11), u(10), 9, u(100)), None);
        // Covered and falling at the net rate 5/s: ⌊(2_000 − 1_000) / 5⌋ + 1 = 201 s later.
        assert_eq!(liquidatable_at(i(2_000), u(5), u(10), 9, u(100)), Some(9 + 201));
        for (b, inc, out) in [(2_000i128, 5u128, 10u128), (1_000, 0, 10), (1_001, 9, 10)] {
            let at = liquidatable_at(i(b), u(inc), u(out), 9, u(100)).unwrap();
            let first = (9..).find(|t| liquidatable(i(b), u(inc), u(out), 9, u(100), *t)).unwrap();
            assert_eq!(at, first, "b={b} inc={inc} out={out}");
        }
    }

    #[test]
    fn huge_values_do_not_overflow() {
        // 18-decimal balances with 2^160 total supply, rates up to uint128.
        let b = I256::try_from(U256::from(1u8) << 159).unwrap();
        assert_eq!(liquidatable_at(b, u(0), u(1), 0, u(86_400)), None, "beyond u64 seconds");
        let d = U256::from(u128::MAX);
        let at = liquidatable_at(b, u(0), d, 0, u(86_400)).unwrap();
        assert!(!liquidatable(b, u(0), d, 0, u(86_400), at - 1) && liquidatable(b, u(0), d, 0, u(86_400), at));
        assert_eq!(liquidatable_at(b, u(0), U256::MAX, 0, U256::MAX), None, "d·W overflows: ignored, not a panic");
    }
}
