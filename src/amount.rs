//! Exact money at the edge: decimal strings from clients become on-chain integers here and
//! nowhere else. Nothing in this module (or the crate) uses floating point.
//!
//! Two unit systems meet in StreamPay: the underlying token's base units (e.g. 6 decimals for
//! USDC, used by `deposit`) and the contract's internal 18-decimal units (used by `withdraw`,
//! `pay` and stream rates).

use std::str::FromStr;

use alloy::primitives::U256;
use rust_decimal::Decimal;

/// Decimals of StreamPay's internal balances, whatever the token's decimals.
pub const INTERNAL_DECIMALS: u32 = 18;

/// A "month" for `subscription_rate`: 30 days, as in AzothPay.
pub const SECONDS_PER_MONTH: u64 = 2_592_000;

/// Why a client's amount was refused. Every variant is the client's mistake (a 400).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AmountError {
    #[error("`{0}` is not a decimal number like \"12.5\"")]
    Malformed(String),
    #[error("amount must not be negative")]
    Negative,
    #[error("amount must be greater than zero")]
    Zero,
    #[error("`{value}` has more than {max} decimal places")]
    TooManyDecimals { value: String, max: u32 },
    #[error("amount is too large")]
    TooLarge,
    #[error("rate of {monthly} per month is below one base unit per second (minimum {minimum} per month)")]
    RateTooSmall { monthly: String, minimum: String },
}

/// A strictly positive amount, exact in both representations.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Amount {
    /// The amount in whole units, as the client wrote it (normalised).
    pub units: Decimal,
    /// The amount scaled to integer base units (`units × 10^decimals`).
    pub base_units: U256,
}

/// Parses a positive decimal string with at most `decimals` decimal places into base units.
///
/// The grammar is deliberately strict (`123`, `0.5`, `12.50`; no sign, exponent, separators or
/// bare dots) so that there is exactly one reading of every accepted string.
pub fn parse_amount(input: &str, decimals: u32) -> Result<Amount, AmountError> {
    let units = parse_decimal(input)?;
    if units.is_zero() {
        return Err(AmountError::Zero);
    }
    // Trailing zeros carry no precision ("1.500000000" is fine for a 6-decimal token).
    let units = units.normalize();
    if units.scale() > decimals {
        return Err(AmountError::TooManyDecimals { value: input.to_string(), max: decimals });
    }
    let base_units = to_base_units(units, decimals)?;
    Ok(Amount { units, base_units })
}

/// A subscription rate given per 30-day month, converted to the contract's per-second rate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MonthlyRate {
    /// What the client asked for, in token units per month.
    pub monthly: Decimal,
    /// On-chain rate: 18-decimal units per second, `floor(monthly × 1e18 / 2_592_000)`.
    pub per_second: U256,
    /// What the stream really pays per month at `per_second` (≤ `monthly`, off by < 1 wei/s).
    pub effective_monthly: String,
}

/// Parses `subscription_rate` (token units per month) into the on-chain per-second rate.
///
/// The floor loses less than one 18-decimal base unit per second; a rate that floors to zero or
/// does not fit the contract's `uint96` is refused rather than silently changed.
pub fn parse_monthly_rate(input: &str) -> Result<MonthlyRate, AmountError> {
    let monthly = parse_amount(input, INTERNAL_DECIMALS)?;
    let per_second = monthly.base_units / U256::from(SECONDS_PER_MONTH);
    if per_second.is_zero() {
        return Err(AmountError::RateTooSmall {
            monthly: input.to_string(),
            minimum: format_units(U256::from(SECONDS_PER_MONTH), INTERNAL_DECIMALS),
        });
    }
    if per_second > U256::from(u128::MAX >> 32) {
        // uint96 is the contract's rate type.
        return Err(AmountError::TooLarge);
    }
    let effective = per_second * U256::from(SECONDS_PER_MONTH);
    Ok(MonthlyRate {
        monthly: monthly.units,
        per_second,
        effective_monthly: format_units(effective, INTERNAL_DECIMALS),
    })
}

/// Formats integer base units as an exact decimal string without trailing zeros ("12.5", "0").
pub fn format_units(value: U256, decimals: u32) -> String {
    let digits = value.to_string();
    let decimals = decimals as usize;
    let (int, frac) = if digits.len() > decimals {
        let (i, f) = digits.split_at(digits.len() - decimals);
        (i.to_string(), f.to_string())
    } else {
        ("0".to_string(), format!("{digits:0>decimals$}"))
    };
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() { int } else { format!("{int}.{frac}") }
}

/// Parses a non-negative integer given as a JSON-friendly decimal string ("0", "42").
pub fn parse_uint(input: &str) -> Option<U256> {
    if input.is_empty() || !input.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    U256::from_str_radix(input, 10).ok()
}

fn parse_decimal(input: &str) -> Result<Decimal, AmountError> {
    let body = match input.strip_prefix('-') {
        Some(rest) if is_plain_decimal(rest) => {
            // "-0" is not negative money, but it is not a meaningful amount either.
            return Err(if rest.bytes().all(|b| b == b'0' || b == b'.') {
                AmountError::Zero
            } else {
                AmountError::Negative
            });
        }
        Some(_) => return Err(AmountError::Malformed(input.to_string())),
        None => input,
    };
    if !is_plain_decimal(body) {
        return Err(AmountError::Malformed(input.to_string()));
    }
    // rust_decimal holds 28-29 significant digits: far beyond any real amount, and an overflow
    // is reported rather than rounded.
    Decimal::from_str_exact(body).map_err(|_| AmountError::TooLarge)
}

fn is_plain_decimal(s: &str) -> bool {
    let (int, frac) = match s.split_once('.') {
        Some((i, f)) => (i, Some(f)),
        None => (s, None),
    };
    let digits = |p: &str| !p.is_empty() && p.bytes().all(|b| b.is_ascii_digit());
    digits(int) && frac.is_none_or(digits)
}

fn to_base_units(units: Decimal, decimals: u32) -> Result<U256, AmountError> {
    let mantissa = u128::try_from(units.mantissa()).map_err(|_| AmountError::Negative)?;
    let shift = decimals - units.scale();
    U256::from(mantissa).checked_mul(U256::from(10u8).pow(U256::from(shift))).ok_or(AmountError::TooLarge)
}

impl FromStr for Amount {
    type Err = AmountError;
    /// Parses an amount in 18-decimal internal units.
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        parse_amount(s, INTERNAL_DECIMALS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn base(s: &str, d: u32) -> Result<String, AmountError> {
        parse_amount(s, d).map(|a| a.base_units.to_string())
    }

    #[test]
    fn parses_exact_amounts_into_base_units() {
        assert_eq!(base("12.5", 6).unwrap(), "12500000");
        assert_eq!(base("0.000001", 6).unwrap(), "1");
        assert_eq!(base("1.500000000", 6).unwrap(), "1500000");
        assert_eq!(base("7", 18).unwrap(), "7000000000000000000");
        assert_eq!(base("0.000000000000000001", 18).unwrap(), "1");
    }

    #[test]
    fn refuses_more_decimals_than_the_unit_has() {
        assert!(matches!(base("0.0000001", 6), Err(AmountError::TooManyDecimals { max: 6, .. })));
    }

    #[test]
    fn refuses_negative_zero_and_malformed() {
        assert_eq!(base("-1", 6), Err(AmountError::Negative));
        assert_eq!(base("0", 6), Err(AmountError::Zero));
        assert_eq!(base("0.000", 6), Err(AmountError::Zero));
        assert_eq!(base("-0", 6), Err(AmountError::Zero));
        for bad in ["", "abc", "1e5", ".5", "5.", "1,5", " 1", "+1", "1_000", "0x10", "1.2.3", "NaN"] {
            assert!(matches!(base(bad, 6), Err(AmountError::Malformed(_))), "{bad:?} accepted");
        }
    }

    #[test]
    fn refuses_amounts_beyond_decimal_precision() {
        assert_eq!(base("99999999999999999999999999999999", 6), Err(AmountError::TooLarge));
    }

    #[test]
    fn monthly_rate_floors_to_per_second() {
        // $10/month = 10e18 / 2592000 = 3858024691358.024… → 3858024691358 wei/s.
        let r = parse_monthly_rate("10").unwrap();
        assert_eq!(r.per_second, U256::from(3_858_024_691_358u64));
        assert_eq!(r.effective_monthly, "9.999999999999936");
    }

    #[test]
    fn monthly_rate_refuses_sub_wei_per_second_and_uint96_overflow() {
        assert!(matches!(parse_monthly_rate("0.000000000002"), Err(AmountError::RateTooSmall { .. })));
        assert_eq!(parse_monthly_rate("0.000000000002592").unwrap().per_second, U256::from(1));
        // uint96::MAX wei/s × 2592000 s ≈ 2.05e35 wei ≈ 2.05e17 tokens per month.
        assert!(parse_monthly_rate("200000000000000000").is_ok());
        assert_eq!(parse_monthly_rate("300000000000000000"), Err(AmountError::TooLarge));
    }

    #[test]
    fn formats_units_exactly() {
        assert_eq!(format_units(U256::from(12_500_000u64), 6), "12.5");
        assert_eq!(format_units(U256::from(1u64), 6), "0.000001");
        assert_eq!(format_units(U256::ZERO, 18), "0");
        assert_eq!(format_units(U256::from(3_000_000u64), 6), "3");
    }
}
