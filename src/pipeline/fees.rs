//! EIP-1559 fees: what to sign a new transaction with, and how much a replacement must add.
//!
//! Nodes accept a replacement at the same nonce only if *both* the max fee and the priority fee
//! beat the pooled transaction's by their minimum (geth and reth: 10%). Bumps here add 12.5%,
//! rounded up, so integer rounding can never land a replacement just under the line.

/// Max fee and priority fee, in wei.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Fees {
    pub max_fee_per_gas: u128,
    pub max_priority_fee_per_gas: u128,
}

/// Bump in parts per thousand: 12.5%.
const BUMP_PERMILLE: u128 = 125;

/// `x` plus 12.5%, rounded up, and at least `x + 1`.
fn bumped(x: u128) -> u128 {
    let add = (x * BUMP_PERMILLE).div_ceil(1000).max(1);
    x.saturating_add(add)
}

/// What a replacement of `old` must at least pay: 12.5% more on both fees.
pub fn minimum_replacement(old: Fees) -> Fees {
    let max_priority_fee_per_gas = bumped(old.max_priority_fee_per_gas);
    Fees { max_fee_per_gas: bumped(old.max_fee_per_gas).max(max_priority_fee_per_gas), max_priority_fee_per_gas }
}

/// Why a replacement is priced the way it is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BumpDecision {
    /// Send at these fees.
    Send(Fees),
    /// The cap would be exceeded and the transaction does not hold up the queue: wait.
    Wait,
}

/// Fees for replacing `old` when the market now asks for `estimate`. The cap applies to the max
/// fee; only `unjams` (the worker passes it for the transaction holding the sponsor's queue up,
/// and only when the operator set `pipeline.unjam_above_cap`) lets the minimum bump exceed it.
pub fn replacement(old: Fees, estimate: Fees, cap: Option<u128>, unjams: bool) -> BumpDecision {
    let min = minimum_replacement(old);
    let wanted = Fees {
        max_fee_per_gas: min.max_fee_per_gas.max(estimate.max_fee_per_gas),
        max_priority_fee_per_gas: min.max_priority_fee_per_gas.max(estimate.max_priority_fee_per_gas),
    };
    match cap {
        None => BumpDecision::Send(wanted),
        Some(cap) if wanted.max_fee_per_gas <= cap => BumpDecision::Send(wanted),
        // Above the cap: the market fee is not chased; the minimum bump still is, if the queue
        // depends on it.
        Some(cap) if min.max_fee_per_gas <= cap => BumpDecision::Send(Fees {
            max_fee_per_gas: cap,
            max_priority_fee_per_gas: wanted.max_priority_fee_per_gas.min(cap),
        }),
        Some(_) if unjams => BumpDecision::Send(min),
        Some(_) => BumpDecision::Wait,
    }
}

/// Fees for a first transaction: the estimate, held under the cap.
pub fn initial(estimate: Fees, cap: Option<u128>) -> Fees {
    match cap {
        Some(cap) if estimate.max_fee_per_gas > cap => {
            Fees { max_fee_per_gas: cap, max_priority_fee_per_gas: estimate.max_priority_fee_per_gas.min(cap) }
        }
        _ => estimate,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fees(max: u128, tip: u128) -> Fees {
        Fees { max_fee_per_gas: max, max_priority_fee_per_gas: tip }
    }

    #[test]
    fn a_replacement_beats_both_fees_by_at_least_the_nodes_ten_percent() {
        for (max, tip) in [(1, 0), (7, 1), (1_000_000_007, 1_000_000), (30_000_000_000, 2_000_000_000)] {
            let new = minimum_replacement(fees(max, tip));
            // geth: new >= old * 110 / 100 on each field (strictly greater).
            assert!(new.max_fee_per_gas * 100 >= max * 110 && new.max_fee_per_gas > max, "{max}");
            assert!(new.max_priority_fee_per_gas * 100 >= tip * 110 && new.max_priority_fee_per_gas > tip, "{tip}");
            assert!(new.max_fee_per_gas >= new.max_priority_fee_per_gas);
        }
        assert_eq!(minimum_replacement(fees(1000, 100)), fees(1125, 113));
    }

    #[test]
    fn the_market_price_wins_when_it_is_higher() {
        assert_eq!(replacement(fees(100, 10), fees(500, 20), None, false), BumpDecision::Send(fees(500, 20)));
    }

    #[test]
    fn the_cap_limits_chasing_the_market_but_never_blocks_an_unjamming_replacement() {
        // Market far above the cap, minimum bump under it: send at the cap.
        assert_eq!(replacement(fees(100, 10), fees(1000, 10), Some(200), false), BumpDecision::Send(fees(200, 12)));
        // Even the minimum bump is above the cap: a transaction others wait for still goes…
        assert_eq!(replacement(fees(200, 10), fees(1000, 10), Some(200), true), BumpDecision::Send(fees(225, 12)));
        // …one that holds nobody up waits.
        assert_eq!(replacement(fees(200, 10), fees(1000, 10), Some(200), false), BumpDecision::Wait);
    }

    #[test]
    fn a_first_send_respects_the_cap() {
        assert_eq!(initial(fees(1000, 50), Some(300)), fees(300, 50));
        assert_eq!(initial(fees(100, 5), None), fees(100, 5));
    }
}
