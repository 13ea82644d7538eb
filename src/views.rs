//! How the relayer shows its records to the outside, shared by the API and webhook deliveries
//! (which must not depend on the API): EIP-55 addresses, the status vocabulary of the first API
//! version, deployment names, and the one view of a relayed transaction that
//! `GET /api/v1/transactions/{id}`, `GET /api/v1/transactions` and `transaction.*` webhook events
//! are cut from.

use alloy::primitives::{Address, B256};
use serde::Serialize;

use crate::chain::Deployment;

/// Addresses leave the relayer EIP-55 checksummed, as wallets and ethers/viem print them.
pub fn checksum(a: Address) -> String {
    a.to_checksum(None)
}

/// The name of the deployment at `address`, if this relayer serves one there.
pub fn contract_name(deployments: &[Deployment], address: Address) -> Option<String> {
    deployments.iter().find(|c| c.address == address).map(|c| c.name.clone())
}

/// The status vocabulary of the first API version: `submitted`, `mined` or `reverted`, from the
/// pipeline's state (`pending`, `submitted`, `mined`, `confirmed`, `failed`, `replaced`,
/// `expired`, or `reverted` on rows older than migration 0003). Anything not in flight and not
/// mined is `reverted`.
pub fn legacy_status(state: &str) -> &'static str {
    match state {
        "pending" | "submitted" => "submitted",
        "mined" | "confirmed" => "mined",
        _ => "reverted",
    }
}

/// A relayed transaction's row, as read from the store.
#[derive(Debug, Clone)]
pub struct TransactionFacts {
    pub id: i64,
    pub chain_id: u64,
    pub contract: Address,
    pub signer: Address,
    pub meta_nonce: u64,
    pub sponsor: Address,
    pub sponsor_nonce: u64,
    pub tx_hash: B256,
    /// The pipeline's state (the raw `status` column).
    pub state: String,
    pub gas_used: Option<u64>,
    pub block_number: Option<u64>,
    pub failure: Option<String>,
    pub revert_reason: Option<String>,
}

/// A relayed transaction as the outside sees it. Serialized as is, it is the `Data` of a
/// `transaction.*` webhook event (PascalCase keys, `TransactionId` for the id); the API's answers
/// copy its fields under their own keys (`Id` for the id), and add `Status`, `ChainId` and
/// `SponsorNonce` from the fields the event does not carry.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct TransactionView {
    pub transaction_id: i64,
    /// The deployment's name; null when this relayer no longer serves it.
    pub contract: Option<String>,
    pub contract_address: String,
    pub from: String,
    pub nonce: u64,
    pub sponsor: String,
    pub transaction_hash: String,
    /// The pipeline's state.
    pub state: String,
    pub block_number: Option<u64>,
    pub gas_used: Option<u64>,
    pub failure: Option<String>,
    pub revert_reason: Option<String>,
    /// [`legacy_status`] of `state`.
    #[serde(skip)]
    pub status: &'static str,
    #[serde(skip)]
    pub chain_id: u64,
    #[serde(skip)]
    pub sponsor_nonce: u64,
}

impl TransactionView {
    /// The one place a transaction's row becomes what clients see.
    pub fn new(deployments: &[Deployment], f: TransactionFacts) -> Self {
        Self {
            transaction_id: f.id,
            contract: contract_name(deployments, f.contract),
            contract_address: checksum(f.contract),
            from: checksum(f.signer),
            nonce: f.meta_nonce,
            sponsor: checksum(f.sponsor),
            transaction_hash: f.tx_hash.to_string(),
            status: legacy_status(&f.state),
            state: f.state,
            block_number: f.block_number,
            gas_used: f.gas_used,
            failure: f.failure,
            revert_reason: f.revert_reason,
            chain_id: f.chain_id,
            sponsor_nonce: f.sponsor_nonce,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn legacy_status_maps_every_state() {
        for (state, legacy) in [
            ("pending", "submitted"),
            ("submitted", "submitted"),
            ("mined", "mined"),
            ("confirmed", "mined"),
            ("failed", "reverted"),
            ("replaced", "reverted"),
            ("expired", "reverted"),
            ("reverted", "reverted"),
        ] {
            assert_eq!(legacy_status(state), legacy, "{state}");
        }
    }

    #[test]
    fn a_view_checksums_names_and_keeps_the_event_keys() {
        let usdc = Deployment {
            name: "USDC".into(),
            address: Address::repeat_byte(0xab),
            token: Address::repeat_byte(0x01),
            token_decimals: 6,
            start_block: 0,
        };
        let view = TransactionView::new(
            std::slice::from_ref(&usdc),
            TransactionFacts {
                id: 7,
                chain_id: 31337,
                contract: usdc.address,
                signer: Address::repeat_byte(0xcd),
                meta_nonce: 3,
                sponsor: Address::repeat_byte(0xef),
                sponsor_nonce: 9,
                tx_hash: B256::repeat_byte(0x11),
                state: "confirmed".into(),
                gas_used: Some(21_000),
                block_number: Some(5),
                failure: None,
                revert_reason: None,
            },
        );
        assert_eq!(view.status, "mined");
        assert_eq!(view.contract.as_deref(), Some("USDC"));
        assert_eq!(view.from, Address::repeat_byte(0xcd).to_checksum(None));
        assert_ne!(view.from, view.from.to_lowercase(), "checksummed, not lowercase");
        let json = serde_json::to_value(&view).unwrap();
        let keys: Vec<&str> = json.as_object().unwrap().keys().map(String::as_str).collect();
        assert_eq!(
            keys,
            [
                "BlockNumber",
                "Contract",
                "ContractAddress",
                "Failure",
                "From",
                "GasUsed",
                "Nonce",
                "RevertReason",
                "Sponsor",
                "State",
                "TransactionHash",
                "TransactionId"
            ]
        );
        assert_eq!(json["TransactionHash"], format!("0x{}", "11".repeat(32)));
    }
}
