//! The `traits` word of a 1inch-BySig `SignedCall`: nonce type, deadline, allowed relayer and
//! nonce packed into one uint256 (bits 255–254, 247–208, 207–128, 127–0).

use alloy::primitives::{Address, U256};

const TYPE_SHIFT: usize = 254;
const DEADLINE_SHIFT: usize = 208;
const RELAYER_SHIFT: usize = 128;
/// Deadlines are 40-bit unix seconds.
pub const MAX_DEADLINE: u64 = (1 << 40) - 1;
const RELAYER_MASK: u128 = (1 << 80) - 1;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum NonceType {
    Account = 0,
    Selector = 1,
    Unique = 2,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traits {
    pub nonce_type: NonceType,
    /// Unix seconds; the call is valid while `block.timestamp <= deadline`.
    pub deadline: u64,
    /// Low 80 bits of the only relayer allowed to submit; 0 lets anyone submit.
    pub relayer_bits: u128,
    pub nonce: u128,
}

impl NonceType {
    /// The name clients use (`NonceType` in build and execute requests).
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Account => "account",
            Self::Selector => "selector",
            Self::Unique => "unique",
        }
    }

    pub fn from_i16(v: i16) -> Option<Self> {
        match v {
            0 => Some(Self::Account),
            1 => Some(Self::Selector),
            2 => Some(Self::Unique),
            _ => None,
        }
    }
}

/// Unique nonces the relayer hands out are random below 2^53, so they survive JSON clients that
/// parse numbers as doubles (JavaScript's `Number.MAX_SAFE_INTEGER`). Only the signer's own calls
/// can collide with each other (about 1 in 10^8 for 10^4 calls of one signer); a collision is
/// caught at execute (`nonce_already_used`) and costs a rebuild, never a stuck account.
pub const UNIQUE_NONCE_BITS: u32 = 53;

/// A fresh random unique nonce (see [`UNIQUE_NONCE_BITS`]); never 0.
pub fn random_unique_nonce() -> u64 {
    use rand::Rng;
    rand::rng().random_range(1..(1u64 << UNIQUE_NONCE_BITS))
}

impl Traits {
    /// A unique-nonce (unordered) call: it neither waits for nor blocks any other call of the
    /// signer. Only `relayer` may submit it (see [`Traits::account`]).
    pub fn unique(nonce: u64, deadline: u64, relayer: Option<Address>) -> Self {
        Self {
            nonce_type: NonceType::Unique,
            deadline,
            relayer_bits: relayer.map_or(0, relayer_bits),
            nonce: nonce.into(),
        }
    }

    /// A call of `nonce_type` (account or unique).
    pub fn of_type(nonce_type: NonceType, nonce: u64, deadline: u64, relayer: Option<Address>) -> Self {
        Self { nonce_type, ..Self::account(nonce, deadline, relayer) }
    }

    /// An account-nonce call that only `relayer` may submit: binding the sponsor into the
    /// signature stops anyone else from front-running the relayer with the user's signature.
    pub fn account(nonce: u64, deadline: u64, relayer: Option<Address>) -> Self {
        Self {
            nonce_type: NonceType::Account,
            deadline,
            relayer_bits: relayer.map_or(0, relayer_bits),
            nonce: nonce.into(),
        }
    }

    pub fn encode(&self) -> U256 {
        assert!(self.deadline <= MAX_DEADLINE, "deadline beyond 40 bits");
        (U256::from(self.nonce_type as u8) << TYPE_SHIFT)
            | (U256::from(self.deadline) << DEADLINE_SHIFT)
            | (U256::from(self.relayer_bits & RELAYER_MASK) << RELAYER_SHIFT)
            | U256::from(self.nonce)
    }

    /// Decodes a traits word; `None` for the reserved nonce type 3.
    pub fn decode(word: U256) -> Option<Self> {
        let nonce_type = match (word >> TYPE_SHIFT).to::<u8>() {
            0 => NonceType::Account,
            1 => NonceType::Selector,
            2 => NonceType::Unique,
            _ => return None,
        };
        let deadline = ((word >> DEADLINE_SHIFT) & U256::from(MAX_DEADLINE)).to::<u64>();
        let relayer_bits = ((word >> RELAYER_SHIFT) & U256::from(RELAYER_MASK)).to::<u128>();
        let nonce = (word & U256::from(u128::MAX)).to::<u128>();
        Some(Self { nonce_type, deadline, relayer_bits, nonce })
    }

    /// Whether `relayer` may submit a call carrying these traits.
    pub fn allows_relayer(&self, relayer: Address) -> bool {
        self.relayer_bits == 0 || self.relayer_bits == relayer_bits(relayer)
    }
}

/// The low 80 bits of an address, as the contract compares them.
pub fn relayer_bits(address: Address) -> u128 {
    let bytes = address.into_array();
    let mut low = [0u8; 16];
    low[6..].copy_from_slice(&bytes[10..]);
    u128::from_be_bytes(low)
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::primitives::address;

    #[test]
    fn traits_round_trip_and_match_the_bit_layout() {
        let relayer = address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
        let t = Traits::account(7, 1_700_000_000, Some(relayer));
        let w = t.encode();
        assert_eq!(Traits::decode(w), Some(t));
        assert_eq!((w >> 254usize).to::<u8>(), 0);
        assert_eq!(((w >> 208usize) & U256::from(MAX_DEADLINE)).to::<u64>(), 1_700_000_000);
        assert_eq!(w & U256::from(u128::MAX), U256::from(7));
        // The low 80 bits are the address's last 10 bytes: 0x70997970c51812dc3a01|0c7d01b50e0d17dc79c8.
        assert_eq!(t.relayer_bits, 0x0c7d01b50e0d17dc79c8);
        assert!(t.allows_relayer(relayer));
        assert!(!t.allows_relayer(Address::ZERO));
        assert!(Traits::account(0, 1, None).allows_relayer(relayer));
    }
}
