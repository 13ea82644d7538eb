//! What a failed `eth_sendRawTransaction` means, and so what to do next.
//!
//! Nodes report these only as messages, and each client words them its own way, so the table
//! below lists the wordings of geth (and its forks), Anvil, reth, Erigon, Nethermind and Besu.
//! None of these is ever retried blindly: "nonce too low" first looks for a receipt of every
//! hash of the row, "underpriced" re-signs with higher fees, "already known" is a success. A
//! message the table does not know is [`SendFault::Unknown`]: retried within a budget, never a
//! cancellation on first sight.

use alloy::transports::{RpcError, TransportError};

/// A classified broadcast failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendFault {
    /// The node already has this exact transaction: as good as accepted.
    AlreadyKnown,
    /// The nonce is used: by one of the row's own transactions (look for its receipt) or by
    /// another transaction (the key was used elsewhere).
    NonceTooLow,
    /// A transaction with this nonce is in the pool with fees this one does not beat by the
    /// node's replacement minimum, or the fee is below the node's floor / the base fee.
    Underpriced,
    /// The sponsor cannot pay `gas × max fee`: wait for a top-up, never skip the nonce.
    InsufficientFunds,
    /// Timeouts, resets, 5xx, rate limits: the same bytes may be sent again.
    Transient,
    /// A message this table does not know ("header not found", "internal error", a provider's
    /// own wording): treated as transient, within a retry budget, because cancelling a valid
    /// call on a node's passing trouble would fail it for good (and cost a cancellation's gas).
    Unknown,
    /// The node will never take this transaction (gas limit, size, chain id…): its nonce must
    /// be filled by a cancellation. Only messages known to be permanent.
    Rejected,
}

/// Message fragments (lower case) by fault, first match wins: the order matters where one
/// fragment contains another ("transaction underpriced" vs "replacement transaction underpriced").
const TABLE: &[(&str, SendFault)] = &[
    ("already known", SendFault::AlreadyKnown),              // geth, erigon, reth
    ("already imported", SendFault::AlreadyKnown),           // anvil
    ("alreadyknown", SendFault::AlreadyKnown),               // nethermind
    ("known transaction", SendFault::AlreadyKnown),          // besu, older geth
    ("already exists", SendFault::AlreadyKnown),             // reth pool
    ("nonce too low", SendFault::NonceTooLow),               // geth, anvil, reth
    ("oldnonce", SendFault::NonceTooLow),                    // nethermind
    ("nonce_too_low", SendFault::NonceTooLow),               // besu
    ("nonce has already been used", SendFault::NonceTooLow), // some providers
    ("replacement transaction underpriced", SendFault::Underpriced),
    ("replacement_underpriced", SendFault::Underpriced), // besu
    ("transaction underpriced", SendFault::Underpriced),
    ("feetoolow", SendFault::Underpriced), // nethermind
    ("max fee per gas less than block base fee", SendFault::Underpriced),
    ("fee cap less than block base fee", SendFault::Underpriced),
    ("feecap too low", SendFault::Underpriced),
    ("gas price too low", SendFault::Underpriced),
    ("insufficient funds", SendFault::InsufficientFunds), // geth, anvil, reth
    ("insufficientfunds", SendFault::InsufficientFunds),  // nethermind
    ("upfront cost exceeds", SendFault::InsufficientFunds), // besu
    ("timeout", SendFault::Transient),
    ("timed out", SendFault::Transient),
    ("connection reset", SendFault::Transient),
    ("connection refused", SendFault::Transient),
    ("connection closed", SendFault::Transient),
    ("broken pipe", SendFault::Transient),
    ("error sending request", SendFault::Transient),
    ("too many requests", SendFault::Transient),
    ("rate limit", SendFault::Transient),
    ("txpool is full", SendFault::Transient),
    ("service unavailable", SendFault::Transient),
    ("bad gateway", SendFault::Transient),
    ("header not found", SendFault::Transient),
    ("internal error", SendFault::Transient),
    ("capacity exceeded", SendFault::Transient),
    ("intrinsic gas too low", SendFault::Rejected),
    ("exceeds block gas limit", SendFault::Rejected),
    ("gas limit reached", SendFault::Rejected),
    ("invalid chain id", SendFault::Rejected),
    ("incorrect chain id", SendFault::Rejected),
    ("oversized data", SendFault::Rejected),
    ("invalid sender", SendFault::Rejected),
    ("exceeds the configured cap", SendFault::Rejected), // geth --rpc.txfeecap
];

/// Classifies a node's error message.
pub fn classify_message(message: &str) -> SendFault {
    let m = message.to_lowercase();
    TABLE.iter().find(|(needle, _)| m.contains(needle)).map(|(_, f)| *f).unwrap_or(SendFault::Unknown)
}

/// Classifies a failed broadcast. Anything below JSON-RPC (HTTP, sockets, undecodable answers)
/// is transient: the signed bytes are the same, so sending them again is safe.
pub fn classify(err: &TransportError) -> SendFault {
    match err {
        RpcError::ErrorResp(payload) => classify_message(&payload.message),
        RpcError::Transport(kind) => {
            // An HTTP 4xx other than 429 carries a node error in its body: classify it.
            let text = kind.to_string();
            match classify_message(&text) {
                SendFault::Rejected | SendFault::Unknown => SendFault::Transient,
                f => f,
            }
        }
        _ => SendFault::Transient,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Real messages, as each node returns them.
    #[test]
    fn the_fault_table() {
        let cases: &[(&str, SendFault)] = &[
            ("already known", SendFault::AlreadyKnown),
            ("transaction already imported", SendFault::AlreadyKnown),
            ("AlreadyKnown", SendFault::AlreadyKnown),
            ("Known transaction (0x1234)", SendFault::AlreadyKnown),
            ("nonce too low: next nonce 5, tx nonce 4", SendFault::NonceTooLow),
            ("nonce too low", SendFault::NonceTooLow),
            ("OldNonce, Current nonce: 5, nonce of rejected tx: 4", SendFault::NonceTooLow),
            ("NONCE_TOO_LOW", SendFault::NonceTooLow),
            ("replacement transaction underpriced", SendFault::Underpriced),
            ("REPLACEMENT_UNDERPRICED", SendFault::Underpriced),
            ("transaction underpriced: tip needed 1, tip permitted 0", SendFault::Underpriced),
            ("FeeTooLow, MaxFeePerGas too low", SendFault::Underpriced),
            ("max fee per gas less than block base fee", SendFault::Underpriced),
            ("insufficient funds for gas * price + value: have 0 want 21000000000000", SendFault::InsufficientFunds),
            ("Insufficient funds for gas * price + value", SendFault::InsufficientFunds),
            ("InsufficientFunds, Balance is zero", SendFault::InsufficientFunds),
            ("Upfront cost exceeds account balance", SendFault::InsufficientFunds),
            ("request timed out", SendFault::Transient),
            ("error sending request for url (http://127.0.0.1:8545/): connection reset by peer", SendFault::Transient),
            ("connection closed before message completed", SendFault::Transient),
            ("429 Too Many Requests", SendFault::Transient),
            ("txpool is full", SendFault::Transient),
            ("intrinsic gas too low", SendFault::Rejected),
            ("exceeds block gas limit", SendFault::Rejected),
            ("invalid chain id for signer", SendFault::Rejected),
            ("oversized data", SendFault::Rejected),
            ("header not found", SendFault::Transient),
            ("internal error", SendFault::Transient),
            ("something the table has never seen", SendFault::Unknown),
        ];
        for (message, expected) in cases {
            assert_eq!(classify_message(message), *expected, "{message}");
        }
    }

    #[test]
    fn transport_failures_are_transient_and_rpc_errors_are_classified() {
        let resp: TransportError =
            RpcError::ErrorResp(serde_json::from_str(r#"{"code":-32003,"message":"nonce too low"}"#).unwrap());
        assert_eq!(classify(&resp), SendFault::NonceTooLow);
        let null: TransportError = RpcError::NullResp;
        assert_eq!(classify(&null), SendFault::Transient);
    }
}
