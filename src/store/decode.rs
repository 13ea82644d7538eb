//! Checked conversions from column values: a value the Rust type cannot hold (a negative count,
//! a hash of the wrong length) is an error to surface, never wrapped or padded into a valid one.

use anyhow::Context;

pub use super::index::{address, bytes32};

/// A `BIGINT` column holding an unsigned number.
pub fn u64_of(v: i64) -> anyhow::Result<u64> {
    u64::try_from(v).with_context(|| format!("negative value {v} in a column of unsigned numbers"))
}

/// [`u64_of`] of a nullable column.
pub fn opt_u64(v: Option<i64>) -> anyhow::Result<Option<u64>> {
    v.map(u64_of).transpose()
}

/// A `BIGINT` column holding an unsigned 128-bit number (fees in wei).
pub fn u128_of(v: i64) -> anyhow::Result<u128> {
    u128::try_from(v).with_context(|| format!("negative value {v} in a column of unsigned numbers"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn negative_and_misshapen_values_are_errors() {
        assert_eq!(u64_of(7).unwrap(), 7);
        assert!(u64_of(-1).is_err());
        assert!(opt_u64(Some(-5)).is_err());
        assert_eq!(opt_u64(None).unwrap(), None);
        assert!(u128_of(-1).is_err());
        assert!(address(&[0u8; 19]).is_err());
        assert!(bytes32(&[0u8; 31]).is_err());
        assert!(address(&[0u8; 20]).is_ok());
    }
}
