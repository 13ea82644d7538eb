//! Which calldata the relayer agrees to pay gas for: StreamPay's user operations only.
//!
//! Sponsors pay for every relayed call, so `execute` refuses anything else (project admin,
//! liquidations, nonce burning, nested `bySig`, calls to other contracts) before simulating.

use alloy::sol_types::SolInterface;

use super::bindings::StreamPay::StreamPayCalls;

/// The largest batch one signature may carry (keeps a transaction well inside a block).
pub const MAX_BATCH: usize = 100;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CallError {
    #[error("Data is not a StreamPay call")]
    Malformed,
    /// Decodes, but is not the canonical ABI encoding of what it decodes to (trailing or
    /// padding junk, dirty high bits, odd offsets): the sponsor would pay for bytes that do
    /// nothing.
    #[error("Data is not the canonical ABI encoding of its call (extra or non-zero padding bytes)")]
    NonCanonical,
    #[error("`{0}` is not a user operation the relayer sponsors")]
    NotAllowed(String),
    #[error("a batch holds {0} calls; at most {MAX_BATCH} are allowed")]
    BatchTooLarge(usize),
    #[error("a batch must hold at least one call")]
    EmptyBatch,
}

/// What an accepted call does, for logs and messages.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CheckedCall {
    /// The user operations in execution order (one unless it is a `multicall`).
    pub operations: Vec<&'static str>,
}

impl CheckedCall {
    pub fn contains_deposit(&self) -> bool {
        self.operations.iter().any(|op| op.starts_with("deposit"))
    }
}

/// Decodes `data` strictly: the validating decoder, then a re-encoding that must equal `data`
/// byte for byte.
fn decode_strict(data: &[u8]) -> Result<StreamPayCalls, CallError> {
    let call = StreamPayCalls::abi_decode_validate(data).map_err(|_| {
        // Tell "not a StreamPay call" from "a StreamPay call with junk".
        if StreamPayCalls::abi_decode(data).is_ok() { CallError::NonCanonical } else { CallError::Malformed }
    })?;
    if call.abi_encode() != data {
        return Err(CallError::NonCanonical);
    }
    Ok(call)
}

/// Checks that `data` is one user operation or a `multicall` of them (not nested), each in its
/// canonical ABI encoding.
pub fn check_user_call(data: &[u8]) -> Result<CheckedCall, CallError> {
    let call = decode_strict(data)?;
    if let StreamPayCalls::multicall(m) = call {
        if m.data.is_empty() {
            return Err(CallError::EmptyBatch);
        }
        if m.data.len() > MAX_BATCH {
            return Err(CallError::BatchTooLarge(m.data.len()));
        }
        let operations = m
            .data
            .iter()
            .map(|item| {
                let inner = decode_strict(item)?;
                single_operation(&inner)
            })
            .collect::<Result<_, _>>()?;
        return Ok(CheckedCall { operations });
    }
    Ok(CheckedCall { operations: vec![single_operation(&call)?] })
}

fn single_operation(call: &StreamPayCalls) -> Result<&'static str, CallError> {
    Ok(match call {
        StreamPayCalls::deposit(_) => "deposit",
        StreamPayCalls::depositFor(_) => "depositFor",
        StreamPayCalls::withdraw(_) => "withdraw",
        StreamPayCalls::withdrawTo(_) => "withdrawTo",
        StreamPayCalls::pay(_) => "pay",
        StreamPayCalls::subscribe(_) => "subscribe",
        StreamPayCalls::subscribeWithMaxFee(_) => "subscribeWithMaxFee",
        StreamPayCalls::unsubscribe(_) => "unsubscribe",
        StreamPayCalls::multicall(_) => return Err(CallError::NotAllowed("nested multicall".into())),
        other => return Err(CallError::NotAllowed(call_name(other))),
    })
}

fn call_name(call: &StreamPayCalls) -> String {
    // The selector is enough to name it in an error message.
    format!("function 0x{}", alloy::hex::encode(call.selector()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::bindings::StreamPay;
    use alloy::{
        primitives::{Address, Bytes, U256},
        sol_types::SolCall,
    };

    fn pay() -> Bytes {
        StreamPay::payCall { receiver: Address::repeat_byte(1), amount: U256::from(1) }.abi_encode().into()
    }

    #[test]
    fn accepts_user_operations_and_batches_of_them() {
        assert_eq!(check_user_call(&pay()).unwrap().operations, vec!["pay"]);
        let batch = StreamPay::multicallCall { data: vec![pay(), pay()] }.abi_encode();
        assert_eq!(check_user_call(&batch).unwrap().operations, vec!["pay", "pay"]);
    }

    #[test]
    fn refuses_admin_calls_nesting_oversized_and_garbage() {
        let liquidate = StreamPay::liquidateCall { account: Address::ZERO }.abi_encode();
        assert!(matches!(check_user_call(&liquidate), Err(CallError::NotAllowed(_))));
        let inner: Bytes = StreamPay::multicallCall { data: vec![pay()] }.abi_encode().into();
        let nested = StreamPay::multicallCall { data: vec![inner] }.abi_encode();
        assert!(matches!(check_user_call(&nested), Err(CallError::NotAllowed(_))));
        let big = StreamPay::multicallCall { data: vec![pay(); MAX_BATCH + 1] }.abi_encode();
        assert_eq!(check_user_call(&big), Err(CallError::BatchTooLarge(MAX_BATCH + 1)));
        let empty = StreamPay::multicallCall { data: vec![] }.abi_encode();
        assert_eq!(check_user_call(&empty), Err(CallError::EmptyBatch));
        assert_eq!(check_user_call(&[1, 2, 3]), Err(CallError::Malformed));
    }

    #[test]
    fn refuses_padding_trailing_junk_and_dirty_words() {
        let mut padded = pay().to_vec();
        padded.extend_from_slice(&[0xff; 64]);
        assert_eq!(check_user_call(&padded), Err(CallError::NonCanonical));
        let mut zeros = pay().to_vec();
        zeros.extend_from_slice(&[0; 32]);
        assert_eq!(check_user_call(&zeros), Err(CallError::NonCanonical));
        // An address word with non-zero high bytes.
        let mut dirty = pay().to_vec();
        dirty[4] = 0xee;
        assert!(matches!(check_user_call(&dirty), Err(CallError::NonCanonical | CallError::Malformed)));
        // Junk inside a batch item.
        let mut item = pay().to_vec();
        item.extend_from_slice(&[0xaa; 32]);
        let batch = StreamPay::multicallCall { data: vec![pay(), item.into()] }.abi_encode();
        assert_eq!(check_user_call(&batch), Err(CallError::NonCanonical));
        // And junk after a canonical batch.
        let mut batch = StreamPay::multicallCall { data: vec![pay(), pay()] }.abi_encode();
        batch.push(1);
        assert_eq!(check_user_call(&batch), Err(CallError::NonCanonical));
    }
}
