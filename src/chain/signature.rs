//! Signature checks done before spending a sponsor's gas, in the contract's order
//! (`StreamPay._isValidSignature`): an ECDSA signature that recovers to the signer is accepted
//! whatever code the signer has (EIP-7702 delegated EOAs), otherwise ERC-1271 (`isValidSignature`
//! via `eth_call`) for accounts with code.
//!
//! The ERC-1271 `eth_call` gets [`ERC1271_GAS_CAP`] gas, not the node's RPC gas cap (often tens
//! of millions): a hostile wallet that burns gas in `isValidSignature` then costs the node a
//! bounded amount per request and is refused ([`SignatureError::GasCapExceeded`]).

use alloy::{
    primitives::{Address, B256, Bytes, Signature, U256},
    providers::{DynProvider, Provider},
};
use anyhow::Context;

use super::bindings::{ERC1271_MAGIC, IERC1271};

/// Gas of the whole `isValidSignature` `eth_call` (intrinsic gas and calldata included). Wallets
/// in use check a signature in a few thousand (a single owner) to some tens of thousands of gas
/// (a Safe with several owners); a wallet that needs more is refused with
/// `signature_check_gas_exceeded` even though the contract itself would accept it.
pub const ERC1271_GAS_CAP: u64 = 200_000;

/// secp256k1 order / 2: OpenZeppelin's ECDSA refuses signatures with a larger `s`.
const HALF_ORDER: U256 =
    alloy::primitives::uint!(0x7FFFFFFFFFFFFFFFFFFFFFFFFFFFFFFF5D576E7357A4501DDFE92F46681B20A0_U256);

#[derive(Debug, thiserror::Error)]
pub enum SignatureError {
    /// Not a signature the contract could ever accept.
    #[error("{0}")]
    Malformed(String),
    /// Well-formed, but not `signer`'s signature over this digest.
    #[error("the signature is not {signer}'s signature of this call{}", recovered.map(|r| format!(" (it was signed by {r})")).unwrap_or_default())]
    Mismatch { signer: Address, recovered: Option<Address> },
    /// The signer's wallet contract did not finish `isValidSignature` within
    /// [`ERC1271_GAS_CAP`] (or failed other than by reverting).
    #[error(
        "the wallet contract {signer} did not complete its ERC-1271 isValidSignature check within {ERC1271_GAS_CAP} gas"
    )]
    GasCapExceeded { signer: Address },
    #[error(transparent)]
    Rpc(#[from] anyhow::Error),
}

/// Parses a 65-byte ECDSA signature, refusing what `ecrecover` + OpenZeppelin would refuse.
/// `v` may be 0/1 or 27/28; the returned signature always carries 27/28, which `ecrecover` needs.
pub fn parse_ecdsa(bytes: &[u8]) -> Result<Signature, SignatureError> {
    let sig = Signature::from_raw(bytes)
        .map_err(|e| SignatureError::Malformed(format!("not a 65-byte ECDSA signature: {e}")))?;
    if sig.s() > HALF_ORDER {
        return Err(SignatureError::Malformed("signature has a non-canonical (high) s value".into()));
    }
    Ok(sig)
}

/// Recovers the ECDSA signer of `digest`.
pub fn recover(digest: B256, sig: &Signature) -> Result<Address, SignatureError> {
    sig.recover_address_from_prehash(&digest)
        .map_err(|e| SignatureError::Malformed(format!("signature does not recover: {e}")))
}

/// Checks `signature` by `signer` over `digest`; returns the bytes to put on-chain (ECDSA
/// signatures normalised to v = 27/28, ERC-1271 signatures untouched).
pub async fn verify(
    provider: &DynProvider,
    signer: Address,
    digest: B256,
    signature: &[u8],
) -> Result<Bytes, SignatureError> {
    // The common case first, with no RPC: an ECDSA signature that recovers to the signer.
    if let Ok(sig) = parse_ecdsa(signature)
        && recover(digest, &sig).is_ok_and(|r| r == signer)
    {
        return Ok(Bytes::from(sig.as_bytes().to_vec()));
    }
    let code = provider.get_code_at(signer).await.with_context(|| format!("Failed to read the code of {signer}"))?;
    if !code.is_empty() {
        let wallet = IERC1271::new(signer, provider);
        let answer =
            wallet.isValidSignature(digest, Bytes::copy_from_slice(signature)).gas(ERC1271_GAS_CAP).call().await;
        return match answer {
            Ok(magic) if magic.0 == ERC1271_MAGIC => Ok(Bytes::copy_from_slice(signature)),
            Err(e) => Err(erc1271_failure(signer, e)),
            // A non-conforming answer is a refusal, as in SignatureChecker.
            Ok(_) => Err(SignatureError::Mismatch { signer, recovered: None }),
        };
    }
    let sig = parse_ecdsa(signature)?;
    let recovered = recover(digest, &sig)?;
    if recovered != signer {
        return Err(SignatureError::Mismatch { signer, recovered: Some(recovered) });
    }
    Ok(Bytes::from(sig.as_bytes().to_vec()))
}

/// Why an `isValidSignature` call failed: a revert is a refusal, as in SignatureChecker; the node
/// refusing the call otherwise (out of gas under the cap, or an invalid opcode) is
/// [`SignatureError::GasCapExceeded`]; a node that did not answer is [`SignatureError::Rpc`].
fn erc1271_failure(signer: Address, e: alloy::contract::Error) -> SignatureError {
    use alloy::transports::RpcError;
    if e.as_revert_data().is_some() {
        return SignatureError::Mismatch { signer, recovered: None };
    }
    match e {
        alloy::contract::Error::TransportError(RpcError::ErrorResp(payload)) => {
            // Code 3 is a revert with data (EIP-1474); geth answers -32000 "execution reverted"
            // for a revert without data.
            if payload.code == 3 || payload.message.contains("revert") {
                SignatureError::Mismatch { signer, recovered: None }
            } else {
                SignatureError::GasCapExceeded { signer }
            }
        }
        alloy::contract::Error::TransportError(e @ RpcError::Transport(_)) => {
            SignatureError::Rpc(anyhow::Error::new(e).context(format!("Failed to call isValidSignature on {signer}")))
        }
        // Undecodable answers (too short, not a bytes4): not a conforming wallet.
        _ => SignatureError::Mismatch { signer, recovered: None },
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::signers::{SignerSync, local::PrivateKeySigner};

    #[test]
    fn recovers_and_normalises_v() {
        let signer = PrivateKeySigner::random();
        let digest = B256::repeat_byte(7);
        let sig = signer.sign_hash_sync(&digest).unwrap();
        let mut raw = sig.as_bytes();
        raw[64] -= 27; // a wallet answering with v = 0/1
        let parsed = parse_ecdsa(&raw).unwrap();
        assert_eq!(parsed.as_bytes()[64], sig.as_bytes()[64]);
        assert_eq!(recover(digest, &parsed).unwrap(), signer.address());
    }

    #[test]
    fn refuses_high_s_and_wrong_length() {
        let signer = PrivateKeySigner::random();
        let sig = signer.sign_hash_sync(&B256::repeat_byte(1)).unwrap();
        let n = alloy::primitives::uint!(0xFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFFEBAAEDCE6AF48A03BBFD25E8CD0364141_U256);
        let flipped = Signature::new(sig.r(), n - sig.s(), !sig.v());
        assert!(matches!(parse_ecdsa(&flipped.as_bytes()), Err(SignatureError::Malformed(_))));
        assert!(matches!(parse_ecdsa(&[0u8; 64]), Err(SignatureError::Malformed(_))));
    }
}
