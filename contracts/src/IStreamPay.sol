// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

/// @title IStreamPay
/// @notice The AzothPay-compatible surface of a StreamPay deployment. One deployment serves one
/// underlying ERC-20; internal balances are kept at 18 decimals whatever the token's decimals.
interface IStreamPay {
    /// @notice Per-project fee settings. `projectFee` is in basis points of the subscription rate.
    struct Settings {
        uint16 projectFee;
    }

    /// @notice A call signed off-chain and executed through `bySig`. Same layout as 1inch BySig; the
    /// signed EIP-712 struct adds the signer: `SignedCall(address signer,uint256 traits,bytes data)`.
    struct SignedCall {
        uint256 traits;
        bytes data;
    }

    // ---------------------------------------------------------------- events
    event Transfer(address indexed from, address indexed to, uint256 value);
    event StreamCreated(address indexed user, address indexed author, uint256 encodedRates);
    event StreamRevoked(address indexed user, address indexed author, uint256 encodedRates);
    event Liquidated(address indexed account, address indexed liquidator, uint256 reward, uint256 streamsStopped);
    event ProjectIdClaimed(uint256 indexed projectId, address indexed owner);
    event DefaultSettingsSet(uint256 indexed projectId, uint16 projectFee);
    event UserSettingsSet(uint256 indexed projectId, address indexed user, uint16 projectFee);
    /// @notice Emitted on every consumption of a bySig nonce (nonceType 0 account, 1 selector, 2 unique).
    /// `selector` is the first four bytes of the signed data for selector nonces and zero otherwise.
    /// For account nonces, `nonce` is the value consumed: the next valid nonce is `nonce + 1`.
    event NonceUsed(address indexed signer, uint8 nonceType, bytes4 selector, uint256 nonce);
    event SponsoredCallCharged(address indexed signer, address indexed relayer, uint256 amount);
    event ProjectOwnershipTransferStarted(uint256 indexed projectId, address indexed owner, address indexed pendingOwner);
    event ProjectOwnershipTransferred(uint256 indexed projectId, address indexed previousOwner, address indexed newOwner);
    /// @notice One per call of a `bundle`, in order: whether call `index` succeeded, and its revert
    /// data (a StreamPay custom error, usually) when it failed.
    event BundleCallResult(uint256 indexed index, bool success, bytes revertData);

    // ---------------------------------------------------------------- errors
    error StreamPayZeroAmount();
    error StreamPayZeroAddress();
    error StreamPaySelfStream(address account);
    /// @notice The operation would leave `account` unable to cover two `liquidationWindow`s of its
    /// gross outgoing rate (or, without streams, with a negative balance). `needed` is how much more balance
    /// it would take for the operation to pass; `available` is the live balance the operation would
    /// leave (floored at 0).
    error StreamPayInsufficientBalance(address account, uint256 needed, uint256 available);
    error StreamPayAmountTooLarge(uint256 amount);
    error StreamPayTooManyStreams(address account);
    error StreamPayNoSubscription(address user, address author);
    error StreamPayNotLiquidatable(address account);
    error StreamPayUnknownProject(uint256 projectId);
    error StreamPayNotProjectOwner(uint256 projectId, address caller);
    error StreamPayFeeTooHigh(uint16 fee, uint16 max);
    error StreamPayUnsupportedFeeToken(address token);
    error StreamPayUnsupportedPermit(address target);
    error StreamPayDeadlineExceeded(uint256 deadline, uint256 timestamp);
    error StreamPayWrongRelayer(address relayer);
    error StreamPayWrongNonce(address signer, uint8 nonceType, uint256 nonce);
    error StreamPayWrongSignature(address signer);
    error StreamPayWrongNonceType(uint256 nonceType);
    /// @notice A StreamPay entry point was called by `caller` while StreamPay's own call to the token
    /// (or Permit2) was in flight, e.g. from a token hook.
    error StreamPayReentrantCall(address caller);
    /// @notice `subscribeWithMaxFee`: the project's fee `fee` (bps) is above the caller's `maxFee`.
    error StreamPayProjectFeeAboveMax(uint256 projectId, uint16 fee, uint16 maxFee);
    /// @notice `acceptProjectOwnership` by `caller`, who is not the pending owner of `projectId`.
    error StreamPayNotPendingProjectOwner(uint256 projectId, address caller);

    // ---------------------------------------------------------------- token-like views
    function token() external view returns (address);
    function name() external view returns (string memory);
    function symbol() external view returns (string memory);
    function decimals() external pure returns (uint8);
    function totalSupply() external view returns (uint256);
    function balanceOf(address account) external view returns (uint256);

    // ---------------------------------------------------------------- money in and out
    function deposit(uint256 amount, bool isPermit2) external;
    function depositFor(uint256 amount, address to, bool isPermit2) external;
    function withdraw(uint256 amount) external;
    function withdrawTo(address to, uint256 amount) external;
    function pay(address receiver, uint256 amount) external;

    // ---------------------------------------------------------------- streams
    function subscribe(address author, uint96 subscriptionRate, uint256 projectId) external;
    function subscribeWithMaxFee(address author, uint96 subscriptionRate, uint256 projectId, uint16 maxProjectFee)
        external;
    function maxStreams() external pure returns (uint256);
    function unsubscribe(address author) external;
    function subscriptions(address from, address to) external view returns (bool, uint256);
    function allSubscriptions(address from) external view returns (address[] memory, uint256[] memory);
    function accountInfo(address account)
        external
        view
        returns (int256 balance, uint256 incomeRate, uint256 outgoingRate, uint256 updated);
    function signedBalanceOf(address account) external view returns (int256);
    function isLiquidatable(address account) external view returns (bool);
    function liquidationWindow() external view returns (uint256);
    function liquidate(address account) external;

    // ---------------------------------------------------------------- projects
    function claimProjectId() external returns (uint256);
    function projectOwner(uint256 projectId) external view returns (address);
    function setDefaultSettings(Settings calldata settings, uint256 projectId) external;
    function setSettingsForUser(address user, Settings calldata settings, uint256 projectId) external;
    function projectFeeFor(uint256 projectId, address author) external view returns (uint16);
    function transferProjectOwnership(uint256 projectId, address newOwner) external;
    function acceptProjectOwnership(uint256 projectId) external;
    function pendingProjectOwner(uint256 projectId) external view returns (address);

    // ---------------------------------------------------------------- meta-transactions
    function bySig(address signer, SignedCall calldata sig, bytes calldata signature)
        external
        payable
        returns (bytes memory);
    function hashBySig(address signer, SignedCall calldata sig) external view returns (bytes32);
    function bySigAccountNonces(address account) external view returns (uint256);
    function bySigSelectorNonces(address account, bytes4 selector) external view returns (uint256);
    function bySigUniqueNonces(address account, uint256 nonce) external view returns (bool);
    function useBySigAccountNonce(uint32 advance) external;
    function useBySigSelectorNonce(bytes4 selector, uint32 advance) external;
    function useBySigUniqueNonce(uint256 nonce) external;
    function sponsoredCall(address feeToken, uint256 amount, bytes calldata data, bytes calldata extraData)
        external
        payable
        returns (bytes memory);
    function permitAndCall(bytes calldata permit, bytes calldata action) external payable;
    function multicall(bytes[] calldata data) external;
    function bundle(bytes[] calldata calls) external returns (bool[] memory success);
}
