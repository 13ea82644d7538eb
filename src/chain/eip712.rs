//! EIP-712 documents and digests: the `SignedCall` a user signs for `bySig`, and the EIP-2612
//! `Permit` that lets a user with no native coin approve a deposit, and Uniswap Permit2's
//! `PermitSingle` for tokens pulled through Permit2.
//!
//! The JSON documents are what wallets sign as-is (`eth_signTypedData_v4`, ethers, viem): every
//! uint256 is a decimal string (JSON numbers cannot hold them), addresses are checksummed, and
//! `types` includes `EIP712Domain`. The digest returned beside each document is computed from the
//! same values by alloy's typed `SolStruct` hashing, and the tests check both agree with the
//! contract's `hashBySig`.

use alloy::{
    primitives::{Address, B256, Bytes, U256},
    sol,
    sol_types::{Eip712Domain, SolStruct},
};
use serde_json::{Value, json};

use super::bindings::{IPermit2, PERMIT2};

sol! {
    /// StreamPay's signed call: `SignedCall(address signer,uint256 traits,bytes data)`. 1inch
    /// BySig's struct plus the signer, so a signature made for one account (an EOA) never runs as
    /// another account of the same key (an ERC-1271 wallet it owns), and vice versa.
    struct SignedCall {
        address signer;
        uint256 traits;
        bytes data;
    }

    /// EIP-2612 permit.
    struct Permit {
        address owner;
        address spender;
        uint256 value;
        uint256 nonce;
        uint256 deadline;
    }
}

/// The fields of an EIP-712 domain as served to wallets.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Domain {
    pub name: String,
    pub version: String,
    pub chain_id: u64,
    pub verifying_contract: Address,
}

impl Domain {
    /// StreamPay's domain: `EIP712("StreamPay", "1")` at the deployment's address.
    pub fn streampay(chain_id: u64, contract: Address) -> Self {
        Self { name: "StreamPay".into(), version: "1".into(), chain_id, verifying_contract: contract }
    }

    pub fn to_alloy(&self) -> Eip712Domain {
        Eip712Domain::new(
            Some(self.name.clone().into()),
            Some(self.version.clone().into()),
            Some(U256::from(self.chain_id)),
            Some(self.verifying_contract),
            None,
        )
    }

    fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "version": self.version,
            "chainId": self.chain_id,
            "verifyingContract": self.verifying_contract.to_checksum(None),
        })
    }
}

fn domain_type() -> Value {
    json!([
        {"name": "name", "type": "string"},
        {"name": "version", "type": "string"},
        {"name": "chainId", "type": "uint256"},
        {"name": "verifyingContract", "type": "address"},
    ])
}

/// The digest `bySig(signer, …)` checks the signature against (the contract's
/// `hashBySig(signer, (traits, data))`).
pub fn signed_call_digest(domain: &Domain, signer: Address, traits: U256, data: &Bytes) -> B256 {
    SignedCall { signer, traits, data: data.clone() }.eip712_signing_hash(&domain.to_alloy())
}

/// The complete typed-data document for a `SignedCall` executed as `signer`.
pub fn signed_call_typed_data(domain: &Domain, signer: Address, traits: U256, data: &Bytes) -> Value {
    json!({
        "types": {
            "EIP712Domain": domain_type(),
            "SignedCall": [
                {"name": "signer", "type": "address"},
                {"name": "traits", "type": "uint256"},
                {"name": "data", "type": "bytes"},
            ],
        },
        "primaryType": "SignedCall",
        "domain": domain.to_json(),
        "message": {
            "signer": signer.to_checksum(None),
            "traits": traits.to_string(),
            "data": data.to_string(),
        },
    })
}

/// An EIP-2612 permit's values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PermitValues {
    pub owner: Address,
    pub spender: Address,
    pub value: U256,
    pub nonce: U256,
    pub deadline: U256,
}

pub fn permit_digest(token_domain: &Domain, p: &PermitValues) -> B256 {
    Permit { owner: p.owner, spender: p.spender, value: p.value, nonce: p.nonce, deadline: p.deadline }
        .eip712_signing_hash(&token_domain.to_alloy())
}

pub fn permit_typed_data(token_domain: &Domain, p: &PermitValues) -> Value {
    json!({
        "types": {
            "EIP712Domain": domain_type(),
            "Permit": [
                {"name": "owner", "type": "address"},
                {"name": "spender", "type": "address"},
                {"name": "value", "type": "uint256"},
                {"name": "nonce", "type": "uint256"},
                {"name": "deadline", "type": "uint256"},
            ],
        },
        "primaryType": "Permit",
        "domain": token_domain.to_json(),
        "message": {
            "owner": p.owner.to_checksum(None),
            "spender": p.spender.to_checksum(None),
            "value": p.value.to_string(),
            "nonce": p.nonce.to_string(),
            "deadline": p.deadline.to_string(),
        },
    })
}

/// A Permit2 `PermitSingle`'s values: `owner` lets `spender` pull up to `amount` of `token`
/// through Permit2 until `expiration`; the signature is good until `sig_deadline`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Permit2Values {
    pub owner: Address,
    pub token: Address,
    pub amount: alloy::primitives::U160,
    pub expiration: alloy::primitives::aliases::U48,
    pub nonce: alloy::primitives::aliases::U48,
    pub spender: Address,
    pub sig_deadline: U256,
}

impl Permit2Values {
    pub fn permit_single(&self) -> IPermit2::PermitSingle {
        IPermit2::PermitSingle {
            details: IPermit2::PermitDetails {
                token: self.token,
                amount: self.amount,
                expiration: self.expiration,
                nonce: self.nonce,
            },
            spender: self.spender,
            sigDeadline: self.sig_deadline,
        }
    }
}

/// Permit2's EIP-712 domain: name "Permit2", no version, the chain, Permit2's address.
pub fn permit2_domain(chain_id: u64) -> Eip712Domain {
    Eip712Domain::new(Some("Permit2".into()), None, Some(U256::from(chain_id)), Some(PERMIT2), None)
}

pub fn permit2_digest(chain_id: u64, p: &Permit2Values) -> B256 {
    p.permit_single().eip712_signing_hash(&permit2_domain(chain_id))
}

pub fn permit2_typed_data(chain_id: u64, p: &Permit2Values) -> Value {
    json!({
        "types": {
            "EIP712Domain": [
                {"name": "name", "type": "string"},
                {"name": "chainId", "type": "uint256"},
                {"name": "verifyingContract", "type": "address"},
            ],
            "PermitSingle": [
                {"name": "details", "type": "PermitDetails"},
                {"name": "spender", "type": "address"},
                {"name": "sigDeadline", "type": "uint256"},
            ],
            "PermitDetails": [
                {"name": "token", "type": "address"},
                {"name": "amount", "type": "uint160"},
                {"name": "expiration", "type": "uint48"},
                {"name": "nonce", "type": "uint48"},
            ],
        },
        "primaryType": "PermitSingle",
        "domain": {"name": "Permit2", "chainId": chain_id, "verifyingContract": PERMIT2.to_checksum(None)},
        "message": {
            "details": {
                "token": p.token.to_checksum(None),
                "amount": p.amount.to_string(),
                "expiration": p.expiration.to_string(),
                "nonce": p.nonce.to_string(),
            },
            "spender": p.spender.to_checksum(None),
            "sigDeadline": p.sig_deadline.to_string(),
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloy::{dyn_abi::TypedData, primitives::address};

    // The JSON document and the typed digest must describe the same thing; alloy's dynamic
    // TypedData parser plays the wallet here.
    #[test]
    fn typed_data_document_hashes_to_the_digest() {
        let domain = Domain::streampay(31337, address!("0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"));
        let traits = U256::from(123456789u64) << 208;
        let data = Bytes::from(vec![0xde, 0xad, 0xbe, 0xef]);
        let signer = address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
        let doc: TypedData = serde_json::from_value(signed_call_typed_data(&domain, signer, traits, &data)).unwrap();
        assert_eq!(doc.eip712_signing_hash().unwrap(), signed_call_digest(&domain, signer, traits, &data));
    }

    // The signer is part of what is signed: the same call for another account is another digest.
    #[test]
    fn digest_binds_the_signer() {
        let domain = Domain::streampay(31337, address!("0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"));
        let traits = U256::from(1u64);
        let data = Bytes::from(vec![1, 2, 3]);
        let eoa = address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8");
        let wallet = address!("0x3C44CdDdB6a900fa2b585dd299e03d12FA4293BC");
        assert_ne!(signed_call_digest(&domain, eoa, traits, &data), signed_call_digest(&domain, wallet, traits, &data));
        assert_eq!(
            SignedCall::eip712_encode_type(),
            "SignedCall(address signer,uint256 traits,bytes data)",
            "the contract's type string"
        );
    }

    #[test]
    fn permit_document_hashes_to_the_digest() {
        let domain = Domain {
            name: "Mock USD Coin".into(),
            version: "1".into(),
            chain_id: 31337,
            verifying_contract: address!("0x5FbDB2315678afecb367f032d93F642f64180aa3"),
        };
        let p = PermitValues {
            owner: address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            spender: address!("0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"),
            value: U256::from(12_500_000u64),
            nonce: U256::ZERO,
            deadline: U256::from(1_900_000_000u64),
        };
        let doc: TypedData = serde_json::from_value(permit_typed_data(&domain, &p)).unwrap();
        assert_eq!(doc.eip712_signing_hash().unwrap(), permit_digest(&domain, &p));
    }

    #[test]
    fn permit2_document_hashes_to_the_digest_and_the_type_is_permit2s() {
        let p = Permit2Values {
            owner: address!("0x70997970C51812dc3A010C7d01b50e0d17dc79C8"),
            token: address!("0x5FbDB2315678afecb367f032d93F642f64180aa3"),
            amount: alloy::primitives::U160::from(12_500_000u64),
            expiration: alloy::primitives::aliases::U48::from(1_900_000_000u64),
            nonce: alloy::primitives::aliases::U48::from(3u64),
            spender: address!("0xe7f1725E7734CE288F8367e1Bb143E90bb3F0512"),
            sig_deadline: U256::from(1_900_000_000u64),
        };
        let doc: TypedData = serde_json::from_value(permit2_typed_data(31337, &p)).unwrap();
        assert_eq!(doc.eip712_signing_hash().unwrap(), permit2_digest(31337, &p));
        // Permit2's PermitHash library hashes exactly these type strings.
        assert_eq!(
            IPermit2::PermitSingle::eip712_encode_type(),
            "PermitSingle(PermitDetails details,address spender,uint256 sigDeadline)PermitDetails(address token,uint160 amount,uint48 expiration,uint48 nonce)"
        );
        assert_ne!(permit2_digest(1, &p), permit2_digest(31337, &p), "the chain is part of the domain");
    }
}
