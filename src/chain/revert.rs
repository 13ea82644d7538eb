//! Turns revert data into the contract's own words: `StreamPayInsufficientBalance(account: 0x…,
//! needed: 5, available: 0)`. Decoded from the ABI artifacts (StreamPay plus the token's errors,
//! which bubble up through deposits), never by matching strings.

use std::sync::LazyLock;

use alloy::{
    dyn_abi::{DynSolValue, JsonAbiExt},
    json_abi::{Error as AbiError, JsonAbi},
    sol_types::{Panic, Revert, SolError},
};

static ERRORS: LazyLock<Vec<AbiError>> = LazyLock::new(|| {
    let mut errors = Vec::new();
    for artifact in [include_str!("../../abi/StreamPay.json"), include_str!("../../abi/MockToken.json")] {
        let value: serde_json::Value = serde_json::from_str(artifact).expect("abi/ artifacts are valid JSON");
        let abi: JsonAbi = serde_json::from_value(value["abi"].clone()).expect("abi/ artifacts hold an ABI");
        errors.extend(abi.errors().cloned());
    }
    errors
});

/// A revert, decoded as far as the known ABIs allow.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecodedRevert {
    /// The error's name (`StreamPayWrongNonce`, `Error`, `Panic`), or `unknown`.
    pub name: String,
    /// Name and arguments, for humans.
    pub display: String,
}

pub fn decode_revert(data: &[u8]) -> DecodedRevert {
    if data.len() < 4 {
        return DecodedRevert { name: "unknown".into(), display: "reverted without a reason".into() };
    }
    let selector: [u8; 4] = data[..4].try_into().expect("length checked");
    if selector == Revert::SELECTOR
        && let Ok(r) = Revert::abi_decode(data)
    {
        return DecodedRevert { name: "Error".into(), display: format!("Error({:?})", r.reason) };
    }
    if selector == Panic::SELECTOR
        && let Ok(p) = Panic::abi_decode(data)
    {
        return DecodedRevert { name: "Panic".into(), display: format!("Panic({})", p.code) };
    }
    for error in ERRORS.iter().filter(|e| e.selector() == selector) {
        if let Ok(values) = error.abi_decode_input(&data[4..]) {
            let args: Vec<String> =
                error
                    .inputs
                    .iter()
                    .zip(&values)
                    .map(|(param, value)| {
                        if param.name.is_empty() { render(value) } else { format!("{}: {}", param.name, render(value)) }
                    })
                    .collect();
            return DecodedRevert { name: error.name.clone(), display: format!("{}({})", error.name, args.join(", ")) };
        }
    }
    DecodedRevert { name: "unknown".into(), display: format!("unknown error 0x{}", alloy::hex::encode(data)) }
}

fn render(value: &DynSolValue) -> String {
    match value {
        DynSolValue::Address(a) => a.to_checksum(None),
        DynSolValue::Uint(u, _) => u.to_string(),
        DynSolValue::Int(i, _) => i.to_string(),
        DynSolValue::Bool(b) => b.to_string(),
        DynSolValue::String(s) => format!("{s:?}"),
        DynSolValue::FixedBytes(w, size) => format!("0x{}", alloy::hex::encode(&w[..*size])),
        DynSolValue::Bytes(b) => format!("0x{}", alloy::hex::encode(b)),
        DynSolValue::Array(items) | DynSolValue::FixedArray(items) | DynSolValue::Tuple(items) => {
            format!("[{}]", items.iter().map(render).collect::<Vec<_>>().join(", "))
        }
        other => format!("{other:?}"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::chain::bindings::StreamPay;
    use alloy::primitives::{Address, U256};

    #[test]
    fn decodes_streampay_custom_errors_with_arguments() {
        let err =
            StreamPay::StreamPayWrongNonce { signer: Address::repeat_byte(0x11), nonceType: 0, nonce: U256::from(3) };
        let d = decode_revert(&err.abi_encode());
        assert_eq!(d.name, "StreamPayWrongNonce");
        assert!(d.display.contains("nonce: 3"), "{}", d.display);
    }

    #[test]
    fn decodes_the_v2_custom_errors() {
        let fee = StreamPay::StreamPayProjectFeeAboveMax { projectId: U256::from(7), fee: 2000, maxFee: 500 };
        let d = decode_revert(&fee.abi_encode());
        assert_eq!(d.name, "StreamPayProjectFeeAboveMax");
        assert_eq!(d.display, "StreamPayProjectFeeAboveMax(projectId: 7, fee: 2000, maxFee: 500)");
        let who = Address::repeat_byte(0x22);
        let d = decode_revert(&StreamPay::StreamPayReentrantCall { caller: who }.abi_encode());
        assert_eq!(d.name, "StreamPayReentrantCall");
        assert!(d.display.contains(&who.to_checksum(None)), "{}", d.display);
        let d = decode_revert(
            &StreamPay::StreamPayNotPendingProjectOwner { projectId: U256::from(1), caller: who }.abi_encode(),
        );
        assert_eq!(d.name, "StreamPayNotPendingProjectOwner");
    }

    #[test]
    fn decodes_plain_reverts_and_unknown_data() {
        let d = decode_revert(&Revert::from("nope").abi_encode());
        assert_eq!(d.name, "Error");
        assert_eq!(decode_revert(&[0xff, 0xff, 0xff, 0xff]).name, "unknown");
        assert_eq!(decode_revert(&[]).name, "unknown");
    }
}
