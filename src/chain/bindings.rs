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

/// `isValidSignature` returns this selector when the signature is valid.
pub const ERC1271_MAGIC: [u8; 4] = [0x16, 0x26, 0xba, 0x7e];
