// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {Vm} from "../utils/Vm.sol";

/// @title SigUtils
/// @notice Independent re-implementation of StreamPay's bySig encoding (traits layout, EIP-712
/// domain and `SignedCall` struct hash) and of the EIP-2612 permit digest, shared by the
/// meta-transaction tests and the invariant handler. Nothing here calls StreamPay.
library SigUtils {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant SIGNED_CALL_TYPEHASH =
        keccak256("SignedCall(address signer,uint256 traits,bytes data)");
    bytes32 internal constant PERMIT_TYPEHASH =
        keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)");

    uint256 internal constant ACCOUNT = 0;
    uint256 internal constant SELECTOR = 1;
    uint256 internal constant UNIQUE = 2;

    /// @dev bits 255-254 nonce type, 247-208 deadline, 207-128 low 80 bits of the allowed relayer
    /// (0 = any), 127-0 nonce.
    function traits(uint256 nonceType, uint256 deadline, address allowedRelayer, uint256 nonce)
        internal
        pure
        returns (uint256)
    {
        require(nonceType < 4 && deadline < 2 ** 40 && nonce < 2 ** 128, "SigUtils: traits out of range");
        uint256 relayerBits = uint256(uint160(allowedRelayer)) % 2 ** 80;
        return nonceType * 2 ** 254 + deadline * 2 ** 208 + relayerBits * 2 ** 128 + nonce;
    }

    function domainSeparator(string memory name, string memory version, uint256 chainId, address verifying)
        internal
        pure
        returns (bytes32)
    {
        return keccak256(
            abi.encode(DOMAIN_TYPEHASH, keccak256(bytes(name)), keccak256(bytes(version)), chainId, verifying)
        );
    }

    /// @dev The EIP-712 digest `signer` signs for `SignedCall(signer, traits, data)` on the
    /// StreamPay deployment `streamPay` of chain `chainId`.
    function bySigDigest(address streamPay, uint256 chainId, address signer, uint256 traits_, bytes memory data)
        internal
        pure
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(SIGNED_CALL_TYPEHASH, signer, traits_, keccak256(data)));
        return keccak256(abi.encodePacked(hex"1901", domainSeparator("StreamPay", "1", chainId, streamPay), structHash));
    }

    /// @dev 65-byte r ‖ s ‖ v signature of `digest` by `pk`.
    function sign(uint256 pk, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }

    /// @dev `pk`'s signature of a SignedCall for `streamPay` on the current chain, as the EOA of `pk`.
    function signCall(uint256 pk, address streamPay, uint256 traits_, bytes memory data)
        internal
        view
        returns (bytes memory)
    {
        return signCallAs(pk, vm.addr(pk), streamPay, traits_, data);
    }

    /// @dev `pk`'s signature of a SignedCall executed as `signer` (e.g. an ERC-1271 wallet `pk` owns).
    function signCallAs(uint256 pk, address signer, address streamPay, uint256 traits_, bytes memory data)
        internal
        view
        returns (bytes memory)
    {
        return sign(pk, bySigDigest(streamPay, block.chainid, signer, traits_, data));
    }

    /// @dev EIP-2612 permit digest of an OpenZeppelin ERC20Permit token named `tokenName` (version "1").
    function permitDigest(
        string memory tokenName,
        address tokenAddr,
        address owner,
        address spender,
        uint256 value,
        uint256 nonce,
        uint256 deadline
    ) internal view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(PERMIT_TYPEHASH, owner, spender, value, nonce, deadline));
        return
            keccak256(
                abi.encodePacked(hex"1901", domainSeparator(tokenName, "1", block.chainid, tokenAddr), structHash)
            );
    }

    /// @dev The `permit` argument of StreamPay.permitAndCall for an EIP-2612 permit: the token's
    /// address followed by the ABI-encoded arguments of `permit(owner, spender, value, deadline, v, r, s)`.
    function encodePermit(
        uint256 ownerPk,
        string memory tokenName,
        address tokenAddr,
        address spender,
        uint256 value,
        uint256 nonce,
        uint256 deadline
    ) internal view returns (bytes memory) {
        address owner = vm.addr(ownerPk);
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(ownerPk, permitDigest(tokenName, tokenAddr, owner, spender, value, nonce, deadline));
        return abi.encodePacked(tokenAddr, abi.encode(owner, spender, value, deadline, v, r, s));
    }
}
