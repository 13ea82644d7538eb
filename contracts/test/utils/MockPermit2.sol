// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {IPermit2} from "@1inch/solidity-utils/contracts/interfaces/IPermit2.sol";

/// @title MockPermit2
/// @notice A minimal test double of Uniswap Permit2's AllowanceTransfer: `approve`, signed
/// `permit` (EIP-712 `PermitSingle`, ECDSA only), `allowance` and `transferFrom`. Same struct
/// layouts, type hashes and selectors as the real contract; not the real code.
contract MockPermit2 is IPermit2 {
    error AllowanceExpired(uint256 deadline);
    error InsufficientAllowance(uint256 amount);
    error SignatureExpired(uint256 signatureDeadline);
    error InvalidNonce();
    error InvalidSigner();
    error TransferFailed();

    event Approval(address indexed owner, address indexed token, address indexed spender, uint160 amount, uint48 expiration);
    event Permit(
        address indexed owner,
        address indexed token,
        address indexed spender,
        uint160 amount,
        uint48 expiration,
        uint48 nonce
    );

    bytes32 public constant PERMIT_DETAILS_TYPEHASH =
        keccak256("PermitDetails(address token,uint160 amount,uint48 expiration,uint48 nonce)");
    bytes32 public constant PERMIT_SINGLE_TYPEHASH = keccak256(
        "PermitSingle(PermitDetails details,address spender,uint256 sigDeadline)PermitDetails(address token,uint160 amount,uint48 expiration,uint48 nonce)"
    );
    bytes32 internal constant _DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,uint256 chainId,address verifyingContract)");

    /// owner => token => spender => allowance
    mapping(address => mapping(address => mapping(address => PackedAllowance))) internal _allowances;

    /// @notice EIP-712 domain separator, as Permit2's (name "Permit2", no version).
    function DOMAIN_SEPARATOR() public view returns (bytes32) {
        return keccak256(abi.encode(_DOMAIN_TYPEHASH, keccak256("Permit2"), block.chainid, address(this)));
    }

    /// @notice The digest an owner signs for `permitSingle`.
    function hashPermitSingle(PermitSingle memory permitSingle) public view returns (bytes32) {
        bytes32 details = keccak256(abi.encode(PERMIT_DETAILS_TYPEHASH, permitSingle.details));
        bytes32 structHash =
            keccak256(abi.encode(PERMIT_SINGLE_TYPEHASH, details, permitSingle.spender, permitSingle.sigDeadline));
        return keccak256(abi.encodePacked("\x19\x01", DOMAIN_SEPARATOR(), structHash));
    }

    /// @notice Sets the caller's allowance of `token` for `spender`. An expiration of 0 means "this
    /// block only", as in Permit2.
    function approve(address token, address spender, uint160 amount, uint48 expiration) external {
        PackedAllowance storage a = _allowances[msg.sender][token][spender];
        a.amount = amount;
        a.expiration = expiration == 0 ? uint48(block.timestamp) : expiration;
        emit Approval(msg.sender, token, spender, amount, expiration);
    }

    function allowance(address user, address token, address spender)
        external
        view
        returns (PackedAllowance memory)
    {
        return _allowances[user][token][spender];
    }

    function permit(address owner, PermitSingle memory permitSingle, bytes calldata signature) external {
        if (block.timestamp > permitSingle.sigDeadline) revert SignatureExpired(permitSingle.sigDeadline);
        if (signature.length != 65) revert InvalidSigner();
        bytes32 r = bytes32(signature[0:32]);
        bytes32 s = bytes32(signature[32:64]);
        uint8 v = uint8(signature[64]);
        address recovered = ecrecover(hashPermitSingle(permitSingle), v, r, s);
        if (recovered == address(0) || recovered != owner) revert InvalidSigner();

        PermitDetails memory d = permitSingle.details;
        PackedAllowance storage a = _allowances[owner][d.token][permitSingle.spender];
        if (a.nonce != d.nonce) revert InvalidNonce();
        a.amount = d.amount;
        a.expiration = d.expiration == 0 ? uint48(block.timestamp) : d.expiration;
        a.nonce = d.nonce + 1;
        emit Permit(owner, d.token, permitSingle.spender, d.amount, d.expiration, d.nonce);
    }

    /// @notice Moves `amount` of `token` from `from` to `to` using the caller's allowance; `from`
    /// must have approved this contract on the token itself.
    function transferFrom(address from, address to, uint160 amount, address token) external {
        PackedAllowance storage a = _allowances[from][token][msg.sender];
        if (block.timestamp > a.expiration) revert AllowanceExpired(a.expiration);
        uint160 allowed = a.amount;
        if (allowed != type(uint160).max) {
            if (amount > allowed) revert InsufficientAllowance(allowed);
            unchecked {
                a.amount = allowed - amount;
            }
        }
        (bool ok, bytes memory ret) =
            token.call(abi.encodeWithSignature("transferFrom(address,address,uint256)", from, to, uint256(amount)));
        if (!ok || (ret.length != 0 && !abi.decode(ret, (bool)))) revert TransferFailed();
    }
}
