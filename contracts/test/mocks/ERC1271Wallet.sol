// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

/// @title ERC1271Wallet
/// @notice A minimal smart-contract wallet for tests: it accepts (ERC-1271) any 65-byte ECDSA
/// signature (r, s, v packed) of its owner over the given hash, and lets the owner make calls.
contract ERC1271Wallet {
    bytes4 internal constant _MAGIC = 0x1626ba7e; // IERC1271.isValidSignature.selector
    bytes4 internal constant _INVALID = 0xffffffff;

    address public immutable owner;

    error NotOwner(address caller);

    constructor(address owner_) {
        owner = owner_;
    }

    /// @notice ERC-1271: valid iff `signature` is the owner's ECDSA signature of `hash`.
    function isValidSignature(bytes32 hash, bytes calldata signature) external view returns (bytes4) {
        if (signature.length != 65) return _INVALID;
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        address recovered = ecrecover(hash, v, r, s);
        return recovered != address(0) && recovered == owner ? _MAGIC : _INVALID;
    }

    /// @notice Lets the owner act as the wallet (e.g. approve the token, deposit).
    function execute(address target, bytes calldata data) external returns (bytes memory ret) {
        if (msg.sender != owner) revert NotOwner(msg.sender);
        bool ok;
        (ok, ret) = target.call(data);
        if (!ok) {
            assembly ("memory-safe") {
                revert(add(ret, 0x20), mload(ret))
            }
        }
    }
}
