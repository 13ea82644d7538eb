//! Contract bindings generated from the committed artifacts in `abi/` (ABI + bytecode), so the
//! relayer and the tests always bind exactly what `scripts/export-abi.sh` produced.

// Generated deploy helpers take every constructor argument.
#![allow(clippy::too_many_arguments)]

use alloy::sol;

sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    StreamPay,
    "abi/StreamPay.json"
);

sol!(
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    MockToken,
    "abi/MockToken.json"
);

sol! {
    /// ERC-1271: how a contract wallet says "this signature is mine".
    #[sol(rpc)]
    interface IERC1271 {
        function isValidSignature(bytes32 hash, bytes signature) external view returns (bytes4 magicValue);
    }

    /// The EIP-2612 / EIP-5267 views the relayer needs from any permit token (not only the mock).
    #[sol(rpc)]
    interface IPermitToken {
        function name() external view returns (string);
        function nonces(address owner) external view returns (uint256);
        function eip712Domain() external view returns (bytes1 fields, string name, string version, uint256 chainId, address verifyingContract, bytes32 salt, uint256[] extensions);
    }
}

sol! {
    /// Uniswap Permit2's AllowanceTransfer, as far as the relayer uses it: the allowance an owner
    /// gave a spender (with the nonce its next permit must sign), the signed permit that sets it,
    /// and the EIP-712 domain separator.
    #[sol(rpc)]
    #[derive(Debug, PartialEq, Eq)]
    interface IPermit2 {
        struct PermitDetails {
            address token;
            uint160 amount;
            uint48 expiration;
            uint48 nonce;
        }
        struct PermitSingle {
            PermitDetails details;
            address spender;
            uint256 sigDeadline;
        }
        function allowance(address user, address token, address spender) external view returns (uint160 amount, uint48 expiration, uint48 nonce);
        function permit(address owner, PermitSingle permitSingle, bytes signature) external;
        function DOMAIN_SEPARATOR() external view returns (bytes32);
    }

    /// ERC-20 allowance: an owner must approve Permit2 on the token once before Permit2 deposits.
    #[sol(rpc)]
    interface IErc20Allowance {
        function allowance(address owner, address spender) external view returns (uint256);
        function approve(address spender, uint256 amount) external returns (bool);
    }
}

/// Uniswap Permit2's address: the same on every chain it is deployed to (CREATE2), and where the
/// dev chain and the tests put it. StreamPay deployments served here are built with it.
pub const PERMIT2: alloy::primitives::Address =
    alloy::primitives::address!("0x000000000022D473030F116dDEE9F6B43aC78BA3");

/// `isValidSignature` returns this selector when the signature is valid.
pub const ERC1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];
