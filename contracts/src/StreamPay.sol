// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {IERC20} from "@openzeppelin/contracts/token/ERC20/IERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {SafeERC20} from "@openzeppelin/contracts/token/ERC20/utils/SafeERC20.sol";
import {Address} from "@openzeppelin/contracts/utils/Address.sol";
import {EIP712} from "@openzeppelin/contracts/utils/cryptography/EIP712.sol";
import {SignatureChecker} from "@openzeppelin/contracts/utils/cryptography/SignatureChecker.sol";
import {ECDSA} from "@openzeppelin/contracts/utils/cryptography/ECDSA.sol";
import {IERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Permit.sol";
import {IPermit2} from "@1inch/solidity-utils/contracts/interfaces/IPermit2.sol";

import {IStreamPay} from "./IStreamPay.sol";

/// @title StreamPay
/// @notice Streaming subscriptions, deposits, withdrawals and payments over one ERC-20, with
/// gasless meta-transactions compatible with 1inch BySig. Internal balances are 18-decimal.
/// @dev Accounting is lazy: an account's live balance is its stored balance plus
/// (incomeRate - outgoingRate) * (now - updated). Only a change of rates needs a settlement;
/// credits and debits adjust the stored balance directly, because adding a constant to the stored
/// balance adds the same constant to the live balance at every later time.
///
/// Solvency model (gross: income is revocable by its payer at any second, so it never counts as
/// collateral): an account with streams is liquidatable once its live balance is below
/// `liquidationWindow` seconds of its GROSS outgoing rate. Its own operations (subscribe, pay,
/// withdraw, a sponsored fee) must leave it covering twice that. Nobody else can raise an
/// account's outgoing rate or lower its balance, so no third party (a payer unsubscribing, a payer
/// being liquidated) can make an account liquidatable, and once it is liquidatable its balance
/// still covers a full window of its outflow: a keeper acting within the window leaves every
/// balance non-negative. A later liquidation leaves the deficit as a negative balance (a debt the
/// owner must repay before spending again). An account streams to at most `_MAX_STREAMS` authors,
/// so its liquidation always fits in one transaction.
contract StreamPay is IStreamPay, EIP712 {
    using SafeERC20 for IERC20;

    /// @dev Upper bound of the sum of all balances. Together with the uint128 rate sums and the
    /// 40-bit timestamps it keeps every balance far inside int192, so settling a third party's
    /// account (an author, a project owner) can never overflow and block an unsubscribe.
    uint256 internal constant _MAX_TOTAL_SUPPLY = 1 << 160;
    uint16 internal constant _MAX_PROJECT_FEE = 2000; // 20% in basis points
    uint256 internal constant _BPS = 10_000;
    /// @dev Outgoing streams per account. Liquidation stops them all in one call, so this bounds
    /// its gas (measured at the cap, every slot cold, every stream with a project fee: see
    /// Liquidation.t.sol and BENCHMARKS.md), as Papaya's SUBSCRIPTION_THRESHOLD does.
    uint256 internal constant _MAX_STREAMS = 100;
    /// @dev Windows of gross outflow an account's own operations must leave it able to cover.
    uint256 internal constant _OPERATING_WINDOWS = 2;
    /// @dev The signer is part of the signed struct, so a signature made for one account can never
    /// be replayed as another account of the same key (an EOA and its ERC-1271 wallets).
    bytes32 internal constant _SIGNED_CALL_TYPEHASH =
        keccak256("SignedCall(address signer,uint256 traits,bytes data)");

    // traits layout, identical to 1inch BySigTraits
    uint256 internal constant _TYPE_SHIFT = 254;
    uint256 internal constant _DEADLINE_SHIFT = 208;
    uint256 internal constant _DEADLINE_MASK = (1 << 40) - 1;
    uint256 internal constant _RELAYER_SHIFT = 128;
    uint256 internal constant _RELAYER_MASK = (1 << 80) - 1;
    uint256 internal constant _NONCE_MASK = (1 << 128) - 1;

    struct Account {
        // slot 0: everything a credit or a debit without streams touches
        int192 balance; // stored balance at `updated`, 18 decimals
        uint40 updated;
        uint16 streamCount; // outgoing subscriptions, indexes into _streamList
        bool hasRates; // incomeRate != 0 || outgoingRate != 0; lets plain payments skip slot 1
        // slot 1
        uint128 incomeRate;
        uint128 outgoingRate;
    }

    struct Stream {
        uint96 income; // author's share
        uint96 outgoing; // what the subscriber pays; outgoing - income goes to the project owner
        uint48 projectId;
        uint16 index; // position in the subscriber's _streamList
    }

    struct UserSettings {
        bool set;
        uint16 projectFee;
    }

    IERC20 internal immutable _token;
    IPermit2 internal immutable _permit2;
    uint256 internal immutable _scale;
    uint256 internal immutable _liquidationWindow;

    string internal _name;
    string internal _symbol;
    uint256 internal _totalSupply;
    uint256 internal _nextProjectId = 1;

    mapping(address => Account) internal _accounts;
    mapping(address => mapping(address => Stream)) internal _streams;
    mapping(address => mapping(uint256 => address)) internal _streamList;
    mapping(uint256 => address) internal _projectOwners;
    mapping(uint256 => uint16) internal _defaultFees;
    mapping(uint256 => mapping(address => UserSettings)) internal _userSettings;
    /// @dev Sum of the fee rates every live stream of a project pays its owner, moved to the new
    /// owner when ownership changes hands (removing a stream takes its fee from the current owner).
    mapping(uint256 => uint128) internal _projectFeeRates;
    mapping(uint256 => address) internal _pendingProjectOwners;

    mapping(address => uint256) internal _accountNonces;
    mapping(address => mapping(bytes4 => uint256)) internal _selectorNonces;
    mapping(address => mapping(uint256 => uint256)) internal _uniqueNonces;

    /// @dev The signer of the bySig call being executed; zero outside of one. Transient, so it
    /// can never leak into a later transaction.
    address internal transient _signer;

    /// @dev True while an external call to the token or Permit2 is in flight. Every state-changing
    /// entry point refuses to run then, so a token hook can neither re-enter nor act as `_signer`.
    bool internal transient _tokenCallInFlight;

    /// @dev Refuses to run while a token call is in flight (see `_tokenCallInFlight`).
    modifier noTokenCall() {
        if (_tokenCallInFlight) revert StreamPayReentrantCall(msg.sender);
        _;
    }

    /// @param token_ The underlying ERC-20 (at most 18 decimals).
    /// @param permit2_ Uniswap Permit2 (AllowanceTransfer) used when a deposit asks for it.
    /// @param liquidationWindow_ Seconds of net outflow an account must be able to cover.
    constructor(IERC20Metadata token_, IPermit2 permit2_, uint256 liquidationWindow_) EIP712("StreamPay", "1") {
        if (address(token_) == address(0)) revert StreamPayZeroAddress();
        if (liquidationWindow_ == 0) revert StreamPayZeroAmount();
        uint8 tokenDecimals = token_.decimals();
        if (tokenDecimals > 18) revert StreamPayAmountTooLarge(tokenDecimals);
        _token = token_;
        _permit2 = permit2_;
        _scale = 10 ** (18 - tokenDecimals);
        _liquidationWindow = liquidationWindow_;
        _name = string.concat("StreamPay ", token_.symbol());
        _symbol = string.concat("sp", token_.symbol());
    }

    // =====================================================================================
    // token-like views
    // =====================================================================================

    /// @notice The underlying ERC-20 this deployment holds.
    function token() external view returns (address) {
        return address(_token);
    }

    /// @notice Human-readable name of the internal balance, e.g. "StreamPay USDC".
    function name() external view returns (string memory) {
        return _name;
    }

    /// @notice Symbol of the internal balance, e.g. "spUSDC".
    function symbol() external view returns (string memory) {
        return _symbol;
    }

    /// @notice Internal balances always have 18 decimals, whatever the token's decimals.
    function decimals() external pure returns (uint8) {
        return 18;
    }

    /// @notice Sum of all signed balances: deposits minus withdrawals, in 18-decimal units.
    function totalSupply() external view returns (uint256) {
        return _totalSupply;
    }

    /// @notice Live balance of `account`, floored at zero.
    function balanceOf(address account) external view returns (uint256) {
        int256 b = _liveBalance(_accounts[account]);
        return b > 0 ? uint256(b) : 0;
    }

    /// @notice Live balance of `account`, negative when it streamed more than it held.
    function signedBalanceOf(address account) external view returns (int256) {
        return _liveBalance(_accounts[account]);
    }

    /// @notice Stored state of `account`: balance at `updated`, and its total rates per second.
    function accountInfo(address account)
        external
        view
        returns (int256 balance, uint256 incomeRate, uint256 outgoingRate, uint256 updated)
    {
        Account storage a = _accounts[account];
        return (a.balance, a.incomeRate, a.outgoingRate, a.updated);
    }

    // =====================================================================================
    // money in and out
    // =====================================================================================

    /// @notice Deposits `amount` token units from the caller into the caller's balance.
    /// @param isPermit2 Pull through Permit2 AllowanceTransfer instead of `transferFrom`.
    function deposit(uint256 amount, bool isPermit2) external noTokenCall {
        address sender = _sender();
        _deposit(sender, sender, amount, isPermit2);
    }

    /// @notice Deposits `amount` token units from the caller into `to`'s balance.
    function depositFor(uint256 amount, address to, bool isPermit2) external noTokenCall {
        _deposit(_sender(), to, amount, isPermit2);
    }

    /// @notice Withdraws `amount` (18-decimal units) to the caller.
    /// @dev Only whole token units leave: the sub-unit remainder stays in the caller's balance.
    function withdraw(uint256 amount) external noTokenCall {
        address sender = _sender();
        _withdraw(sender, sender, amount);
    }

    /// @notice Withdraws `amount` (18-decimal units) from the caller's balance to `to`.
    function withdrawTo(address to, uint256 amount) external noTokenCall {
        _withdraw(_sender(), to, amount);
    }

    /// @notice Moves `amount` (18-decimal units) from the caller's balance to `receiver`.
    function pay(address receiver, uint256 amount) external noTokenCall {
        address sender = _sender();
        if (receiver == address(0)) revert StreamPayZeroAddress();
        _debit(sender, amount);
        _credit(receiver, amount);
        emit Transfer(sender, receiver, amount);
    }

    // =====================================================================================
    // streams
    // =====================================================================================

    /// @notice Streams `subscriptionRate` (18-decimal units per second) from the caller to `author`,
    /// replacing any existing stream to that author. A project fee, if `projectId` sets one, is
    /// carved out of the rate and streamed to the project owner. Accepts any fee the project sets
    /// when the call lands: use `subscribeWithMaxFee` to bound it.
    function subscribe(address author, uint96 subscriptionRate, uint256 projectId) external noTokenCall {
        _subscribe(author, subscriptionRate, projectId, _MAX_PROJECT_FEE);
    }

    /// @notice As `subscribe`, but reverts with StreamPayProjectFeeAboveMax if the project fee for
    /// `author` is above `maxProjectFee` basis points when the call lands (e.g. raised by the
    /// project owner after the subscriber signed).
    /// @param author Receiver of the stream (minus the project fee).
    /// @param subscriptionRate 18-decimal units per second the caller pays.
    /// @param projectId Project whose fee applies (0: none).
    /// @param maxProjectFee Highest project fee, in basis points, the caller accepts.
    function subscribeWithMaxFee(address author, uint96 subscriptionRate, uint256 projectId, uint16 maxProjectFee)
        external
        noTokenCall
    {
        _subscribe(author, subscriptionRate, projectId, maxProjectFee);
    }

    function _subscribe(address author, uint96 subscriptionRate, uint256 projectId, uint16 maxProjectFee) internal {
        address user = _sender();
        if (author == address(0)) revert StreamPayZeroAddress();
        if (author == user) revert StreamPaySelfStream(user);
        if (subscriptionRate == 0) revert StreamPayZeroAmount();
        if (projectId != 0 && projectId >= _nextProjectId) revert StreamPayUnknownProject(projectId);

        Account storage u = _settle(user);
        Stream storage s = _streams[user][author];
        uint16 index;
        if (s.outgoing != 0) {
            index = s.index;
            _removeRates(user, u, author, s);
        } else {
            uint256 count = u.streamCount;
            if (count >= _MAX_STREAMS) revert StreamPayTooManyStreams(user);
            index = uint16(count);
            u.streamCount = uint16(count + 1);
            _streamList[user][count] = author;
        }

        uint16 feeBps = _feeFor(projectId, author);
        if (feeBps > maxProjectFee) revert StreamPayProjectFeeAboveMax(projectId, feeBps, maxProjectFee);
        uint96 fee = uint96((uint256(subscriptionRate) * feeBps) / _BPS);
        uint96 income = subscriptionRate - fee;
        _addIncome(author, income);
        if (fee != 0) {
            _addIncome(_projectOwners[projectId], fee);
            _projectFeeRates[projectId] += fee;
        }
        u.outgoingRate += subscriptionRate;
        u.hasRates = true;
        _streams[user][author] = Stream(income, subscriptionRate, uint48(projectId), index);
        _requireSolvent(user, u);
        emit StreamCreated(user, author, _encode(income, subscriptionRate, projectId));
    }

    /// @notice Stops the caller's stream to `author`. Never blocked by the author's or the
    /// project owner's state.
    function unsubscribe(address author) external noTokenCall {
        address user = _sender();
        Stream storage s = _streams[user][author];
        if (s.outgoing == 0) revert StreamPayNoSubscription(user, author);
        Account storage u = _settle(user);
        _removeRates(user, u, author, s);
        _unlist(user, u, s.index);
        delete _streams[user][author];
    }

    /// @notice Whether `from` streams to `to`, and the stream's encoded rates
    /// (bits 0-95 author income, 96-191 subscriber outgoing, 192+ project id).
    function subscriptions(address from, address to) external view returns (bool, uint256) {
        Stream storage s = _streams[from][to];
        if (s.outgoing == 0) return (false, 0);
        return (true, _encode(s.income, s.outgoing, s.projectId));
    }

    /// @notice Every outgoing stream of `from`: authors and encoded rates.
    function allSubscriptions(address from) external view returns (address[] memory authors, uint256[] memory rates) {
        uint256 n = _accounts[from].streamCount;
        authors = new address[](n);
        rates = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            address author = _streamList[from][i];
            Stream storage s = _streams[from][author];
            authors[i] = author;
            rates[i] = _encode(s.income, s.outgoing, s.projectId);
        }
    }

    /// @notice Seconds of net outflow an account must be able to cover to avoid liquidation.
    function liquidationWindow() external view returns (uint256) {
        return _liquidationWindow;
    }

    /// @notice Most outgoing streams one account may have.
    function maxStreams() external pure returns (uint256) {
        return _MAX_STREAMS;
    }

    /// @notice True once `account` has streams and its live balance is below `liquidationWindow`
    /// seconds of its gross outgoing rate (income does not count).
    function isLiquidatable(address account) external view returns (bool) {
        Account memory a = _accounts[account];
        return a.streamCount != 0 && _shortfall(_liveBalance(a), a) != 0;
    }

    /// @notice Stops every outgoing stream of an insolvent `account`; its remaining positive
    /// balance rewards the caller.
    function liquidate(address account) external noTokenCall {
        Account storage a = _settle(account);
        if (a.streamCount == 0 || _shortfall(a.balance, a) == 0) revert StreamPayNotLiquidatable(account);
        uint256 n = a.streamCount;
        for (uint256 i = n; i > 0; --i) {
            address author = _streamList[account][i - 1];
            Stream storage s = _streams[account][author];
            _removeRates(account, a, author, s);
            delete _streams[account][author];
            delete _streamList[account][i - 1];
        }
        a.streamCount = 0;
        address liquidator = _sender();
        uint256 reward = a.balance > 0 ? uint256(int256(a.balance)) : 0;
        if (reward != 0) {
            a.balance = 0;
            _credit(liquidator, reward);
            emit Transfer(account, liquidator, reward);
        }
        emit Liquidated(account, liquidator, reward, n);
    }

    // =====================================================================================
    // projects
    // =====================================================================================

    /// @notice Claims the next project id for the caller, who receives the project's fees.
    function claimProjectId() external noTokenCall returns (uint256 projectId) {
        projectId = _nextProjectId++;
        if (projectId > type(uint48).max) revert StreamPayUnknownProject(projectId);
        address owner = _sender();
        _projectOwners[projectId] = owner;
        emit ProjectIdClaimed(projectId, owner);
    }

    /// @notice Owner of `projectId`, zero if unclaimed.
    function projectOwner(uint256 projectId) external view returns (address) {
        return _projectOwners[projectId];
    }

    /// @notice Sets the fee every new stream of `projectId` pays, unless a per-author fee is set.
    /// Existing streams keep the rates they were created with.
    function setDefaultSettings(Settings calldata settings, uint256 projectId) external noTokenCall {
        _onlyProjectOwner(projectId);
        _checkFee(settings.projectFee);
        _defaultFees[projectId] = settings.projectFee;
        emit DefaultSettingsSet(projectId, settings.projectFee);
    }

    /// @notice Sets the fee of `projectId` for streams to the author `user`.
    function setSettingsForUser(address user, Settings calldata settings, uint256 projectId) external noTokenCall {
        _onlyProjectOwner(projectId);
        _checkFee(settings.projectFee);
        _userSettings[projectId][user] = UserSettings(true, settings.projectFee);
        emit UserSettingsSet(projectId, user, settings.projectFee);
    }

    /// @notice Starts handing `projectId` (and the fees its live streams pay) to `newOwner`, who
    /// must accept it with `acceptProjectOwnership`. Zero cancels a pending transfer.
    function transferProjectOwnership(uint256 projectId, address newOwner) external noTokenCall {
        _onlyProjectOwner(projectId);
        _pendingProjectOwners[projectId] = newOwner;
        emit ProjectOwnershipTransferStarted(projectId, _projectOwners[projectId], newOwner);
    }

    /// @notice Completes a transfer started by `transferProjectOwnership`: the caller becomes the
    /// owner of `projectId` and from now on receives the fees of its live and future streams.
    function acceptProjectOwnership(uint256 projectId) external noTokenCall {
        address newOwner = _sender();
        if (newOwner == address(0) || _pendingProjectOwners[projectId] != newOwner) {
            revert StreamPayNotPendingProjectOwner(projectId, newOwner);
        }
        address previous = _projectOwners[projectId];
        delete _pendingProjectOwners[projectId];
        _projectOwners[projectId] = newOwner;
        uint128 rate = _projectFeeRates[projectId];
        if (rate != 0) {
            _removeIncome(previous, rate);
            _addIncome(newOwner, rate);
        }
        emit ProjectOwnershipTransferred(projectId, previous, newOwner);
    }

    /// @notice Account that may accept ownership of `projectId`, zero if none.
    function pendingProjectOwner(uint256 projectId) external view returns (address) {
        return _pendingProjectOwners[projectId];
    }

    /// @notice Fee in basis points a new stream to `author` under `projectId` pays.
    function projectFeeFor(uint256 projectId, address author) external view returns (uint16) {
        return _feeFor(projectId, author);
    }

    // =====================================================================================
    // meta-transactions (1inch BySig compatible, plus a NonceUsed event)
    // =====================================================================================

    /// @notice Runs `sig.data` on this contract as `signer`, authorised by `signature` over the
    /// EIP-712 `SignedCall(address signer,uint256 traits,bytes data)`: an ECDSA signature of
    /// `signer` (also when `signer` has code, e.g. an EIP-7702 delegated EOA), else ERC-1271.
    function bySig(address signer, SignedCall calldata sig, bytes calldata signature)
        external
        payable
        noTokenCall
        returns (bytes memory ret)
    {
        uint256 traits = sig.traits;
        uint256 deadline = (traits >> _DEADLINE_SHIFT) & _DEADLINE_MASK;
        if (block.timestamp > deadline) revert StreamPayDeadlineExceeded(deadline, block.timestamp);
        // _sender(), not msg.sender: a signed call may itself relay another signed call.
        address relayer = _sender();
        uint256 relayerBits = (traits >> _RELAYER_SHIFT) & _RELAYER_MASK;
        if (relayerBits != 0 && (uint160(relayer) & _RELAYER_MASK) != relayerBits) {
            revert StreamPayWrongRelayer(relayer);
        }
        _useNonce(signer, traits, sig.data);
        if (!_isValidSignature(signer, hashBySig(signer, sig), signature)) {
            revert StreamPayWrongSignature(signer);
        }
        address outer = _signer;
        _signer = signer;
        ret = Address.functionDelegateCall(address(this), sig.data);
        _signer = outer;
    }

    /// @notice EIP-712 digest `signer` signs for `sig` on this deployment.
    function hashBySig(address signer, SignedCall calldata sig) public view returns (bytes32) {
        return _hashTypedDataV4(
            keccak256(abi.encode(_SIGNED_CALL_TYPEHASH, signer, sig.traits, keccak256(sig.data)))
        );
    }

    /// @notice Next account nonce of `account`.
    function bySigAccountNonces(address account) external view returns (uint256) {
        return _accountNonces[account];
    }

    /// @notice Next selector nonce of `account` for `selector`.
    function bySigSelectorNonces(address account, bytes4 selector) external view returns (uint256) {
        return _selectorNonces[account][selector];
    }

    /// @notice Whether `account` has used the unique nonce `nonce`.
    function bySigUniqueNonces(address account, uint256 nonce) external view returns (bool) {
        return _uniqueNonces[account][nonce >> 8] & (1 << (nonce & 0xff)) != 0;
    }

    /// @notice Skips `advance` account nonces of the caller, cancelling calls signed with them.
    function useBySigAccountNonce(uint32 advance) external noTokenCall {
        if (advance == 0) revert StreamPayZeroAmount();
        address account = _sender();
        uint256 next = _accountNonces[account] + advance;
        _accountNonces[account] = next;
        emit NonceUsed(account, 0, bytes4(0), next - 1);
    }

    /// @notice Skips `advance` selector nonces of the caller for `selector`, cancelling calls
    /// signed with them. Emits NonceUsed with the last nonce skipped.
    function useBySigSelectorNonce(bytes4 selector, uint32 advance) external noTokenCall {
        if (advance == 0) revert StreamPayZeroAmount();
        address account = _sender();
        uint256 next = _selectorNonces[account][selector] + advance;
        _selectorNonces[account][selector] = next;
        emit NonceUsed(account, 1, selector, next - 1);
    }

    /// @notice Marks the caller's unique nonce `nonce` used, cancelling a call signed with it.
    function useBySigUniqueNonce(uint256 nonce) external noTokenCall {
        address account = _sender();
        _uniqueNonces[account][nonce >> 8] |= 1 << (nonce & 0xff);
        emit NonceUsed(account, 2, bytes4(0), nonce);
    }

    /// @notice Runs `data` as the caller, then charges the signer `amount` (18-decimal units of
    /// this contract's balance; `feeToken` must be this contract) in favour of the relayer.
    function sponsoredCall(address feeToken, uint256 amount, bytes calldata data, bytes calldata extraData)
        external
        payable
        noTokenCall
        returns (bytes memory ret)
    {
        extraData; // reserved, as in 1inch BySig
        if (feeToken != address(this)) revert StreamPayUnsupportedFeeToken(feeToken);
        ret = Address.functionDelegateCall(address(this), data);
        address signer = _sender();
        // msg.sender is preserved through delegatecalls: it is the account that sent the transaction.
        if (amount != 0 && signer != msg.sender) {
            _debit(signer, amount);
            _credit(msg.sender, amount);
            emit Transfer(signer, msg.sender, amount);
            emit SponsoredCallCharged(signer, msg.sender, amount);
        }
    }

    /// @notice Applies a permit, then runs `action` on this contract. `permit` is the 20-byte
    /// address of the permit's target followed by the ABI-encoded arguments of its `permit`:
    /// the token with EIP-2612 `permit(owner, spender, value, deadline, v, r, s)`, or Permit2 with
    /// `permit(owner, PermitSingle, signature)`. A failed permit (e.g. already used by a
    /// front-runner) is ignored: the action then fails on its own if the allowance is missing.
    function permitAndCall(bytes calldata permit, bytes calldata action) external payable noTokenCall {
        address target = address(bytes20(permit));
        bytes4 selector;
        if (target == address(_token)) selector = IERC20Permit.permit.selector;
        else if (target == address(_permit2) && target != address(0)) selector = IPermit2.permit.selector;
        else revert StreamPayUnsupportedPermit(target);
        // The result is deliberately ignored, see above.
        _tokenCallInFlight = true;
        (bool ok,) = target.call(bytes.concat(selector, permit[20:]));
        _tokenCallInFlight = false;
        ok;
        Address.functionDelegateCall(address(this), action);
    }

    /// @notice Runs every call in `data` on this contract as the caller; all or nothing.
    function multicall(bytes[] calldata data) external noTokenCall {
        for (uint256 i; i < data.length; ++i) {
            bytes calldata item = data[i];
            // Hand-rolled delegatecall: it reuses one scratch area instead of copying every item
            // and its return data into fresh memory, which keeps a 100-item batch linear in gas.
            assembly ("memory-safe") {
                let ptr := mload(0x40)
                calldatacopy(ptr, item.offset, item.length)
                if iszero(delegatecall(gas(), address(), ptr, item.length, 0, 0)) {
                    returndatacopy(ptr, 0, returndatasize())
                    revert(ptr, returndatasize())
                }
            }
        }
    }

    /// @notice Runs every call in `calls` on this contract as the caller, each isolated: a failing
    /// call is undone alone (with the nonce its signature would have used) and the others stand.
    /// Meant for relayers putting many users' `bySig` / `permitAndCall` calls in one transaction.
    /// Emits BundleCallResult for every call, with the revert data of a failure.
    /// @return success Whether each call succeeded.
    function bundle(bytes[] calldata calls) external noTokenCall returns (bool[] memory success) {
        success = new bool[](calls.length);
        for (uint256 i; i < calls.length; ++i) {
            bytes calldata item = calls[i];
            bool ok;
            // Same scratch-area delegatecall as multicall; the return data is copied only on failure.
            assembly ("memory-safe") {
                let ptr := mload(0x40)
                calldatacopy(ptr, item.offset, item.length)
                ok := delegatecall(gas(), address(), ptr, item.length, 0, 0)
            }
            success[i] = ok;
            if (ok) {
                emit BundleCallResult(i, true, "");
            } else {
                bytes memory reason = new bytes(0);
                assembly ("memory-safe") {
                    let size := returndatasize()
                    reason := mload(0x40)
                    mstore(reason, size)
                    returndatacopy(add(reason, 0x20), 0, size)
                    mstore(0x40, add(add(reason, 0x20), and(add(size, 31), not(31))))
                }
                emit BundleCallResult(i, false, reason);
            }
        }
    }

    // =====================================================================================
    // internals
    // =====================================================================================

    function _sender() internal view returns (address) {
        address signer = _signer;
        return signer == address(0) ? msg.sender : signer;
    }

    /// @dev ECDSA first (covers EOAs and EIP-7702 delegated EOAs, whose code may not implement
    /// ERC-1271), then ERC-1271 for contract accounts, as 1inch's recoverOrIsValidSignature.
    function _isValidSignature(address signer, bytes32 hash, bytes calldata signature) internal view returns (bool) {
        (address recovered, ECDSA.RecoverError err,) = ECDSA.tryRecover(hash, signature);
        if (err == ECDSA.RecoverError.NoError && recovered == signer) return true;
        return SignatureChecker.isValidERC1271SignatureNow(signer, hash, signature);
    }

    function _useNonce(address signer, uint256 traits, bytes calldata data) internal {
        uint256 nonceType = traits >> _TYPE_SHIFT;
        uint256 nonce = traits & _NONCE_MASK;
        if (nonceType == 0) {
            uint256 expected = _accountNonces[signer];
            if (nonce != expected) revert StreamPayWrongNonce(signer, 0, nonce);
            _accountNonces[signer] = expected + 1;
            emit NonceUsed(signer, 0, bytes4(0), nonce);
        } else if (nonceType == 1) {
            bytes4 selector = bytes4(data);
            uint256 expected = _selectorNonces[signer][selector];
            if (nonce != expected) revert StreamPayWrongNonce(signer, 1, nonce);
            _selectorNonces[signer][selector] = expected + 1;
            emit NonceUsed(signer, 1, selector, nonce);
        } else if (nonceType == 2) {
            uint256 bit = 1 << (nonce & 0xff);
            uint256 word = _uniqueNonces[signer][nonce >> 8];
            if (word & bit != 0) revert StreamPayWrongNonce(signer, 2, nonce);
            _uniqueNonces[signer][nonce >> 8] = word | bit;
            emit NonceUsed(signer, 2, bytes4(0), nonce);
        } else {
            revert StreamPayWrongNonceType(nonceType);
        }
    }

    function _deposit(address from, address to, uint256 amount, bool isPermit2) internal {
        if (amount == 0) revert StreamPayZeroAmount();
        if (to == address(0)) revert StreamPayZeroAddress();
        if (amount > _MAX_TOTAL_SUPPLY / _scale) revert StreamPayAmountTooLarge(amount);
        // Permit2 moves uint160 amounts: never credit what it would truncate.
        if (isPermit2 && amount > type(uint160).max) revert StreamPayAmountTooLarge(amount);
        uint256 scaled = amount * _scale;
        uint256 total = _totalSupply + scaled;
        if (total > _MAX_TOTAL_SUPPLY) revert StreamPayAmountTooLarge(amount);
        _totalSupply = total;
        _credit(to, scaled);
        emit Transfer(address(0), to, scaled);
        _tokenCallInFlight = true;
        if (isPermit2) {
            _permit2.transferFrom(from, address(this), uint160(amount), address(_token));
        } else {
            _token.safeTransferFrom(from, address(this), amount);
        }
        _tokenCallInFlight = false;
    }

    function _withdraw(address from, address to, uint256 amount) internal {
        if (to == address(0)) revert StreamPayZeroAddress();
        uint256 tokenAmount = amount / _scale;
        if (tokenAmount == 0) revert StreamPayZeroAmount();
        uint256 burned = tokenAmount * _scale;
        _debit(from, burned);
        _totalSupply -= burned;
        emit Transfer(from, address(0), burned);
        _tokenCallInFlight = true;
        _token.safeTransfer(to, tokenAmount);
        _tokenCallInFlight = false;
    }

    /// @dev Adds to the stored balance; valid without a settlement (see the contract notes).
    function _credit(address account, uint256 amount) internal {
        if (amount > _MAX_TOTAL_SUPPLY) revert StreamPayAmountTooLarge(amount);
        _accounts[account].balance += int192(int256(amount));
    }

    /// @dev Subtracts from the stored balance and requires the account to stay solvent. Payments
    /// are the hot path of batches, so an account without streams is checked without loading its
    /// rates slot.
    function _debit(address account, uint256 amount) internal {
        if (amount == 0) revert StreamPayZeroAmount();
        if (amount > _MAX_TOTAL_SUPPLY) revert StreamPayAmountTooLarge(amount);
        Account storage a = _accounts[account];
        int192 balance = a.balance - int192(int256(amount));
        a.balance = balance;
        if (a.hasRates) {
            _requireSolvent(account, a);
        } else if (balance < 0) {
            revert StreamPayInsufficientBalance(account, uint256(-int256(balance)), 0);
        }
    }

    /// @dev Own operations must leave OPERATING_WINDOWS windows of the GROSS outgoing rate.
    function _requireSolvent(address account, Account storage a) internal view {
        uint256 income = a.incomeRate;
        uint256 outgoing = a.outgoingRate;
        int256 live = a.balance + (int256(income) - int256(outgoing)) * int256(block.timestamp - a.updated);
        uint256 required = outgoing * _OPERATING_WINDOWS * _liquidationWindow;
        if (live < int256(required)) {
            revert StreamPayInsufficientBalance(account, uint256(int256(required) - live), live > 0 ? uint256(live) : 0);
        }
    }

    /// @dev How much `balance` lacks to cover one liquidation window of the GROSS outgoing rate
    /// (income is revocable and does not count). Without outflow: a non-negative balance.
    function _shortfall(int256 balance, Account memory a) internal view returns (uint256) {
        uint256 cover;
        if (a.hasRates) cover = uint256(a.outgoingRate) * _liquidationWindow;
        if (cover == 0) return balance < 0 ? uint256(-balance) : 0;
        int256 missing = int256(cover) - balance;
        return missing > 0 ? uint256(missing) : 0;
    }

    function _liveBalance(Account memory a) internal view returns (int256) {
        int256 b = a.balance;
        if (a.hasRates) {
            b += (int256(uint256(a.incomeRate)) - int256(uint256(a.outgoingRate)))
                * int256(block.timestamp - a.updated);
        }
        return b;
    }

    /// @dev Brings the stored balance to the current time; required before any change of rates.
    function _settle(address account) internal returns (Account storage a) {
        a = _accounts[account];
        uint256 updated = a.updated;
        if (updated != block.timestamp) {
            if (a.hasRates) {
                a.balance += int192(
                    (int256(uint256(a.incomeRate)) - int256(uint256(a.outgoingRate)))
                        * int256(block.timestamp - updated)
                );
            }
            a.updated = uint40(block.timestamp);
        }
    }

    function _addIncome(address account, uint128 rate) internal {
        if (rate == 0) return;
        Account storage a = _settle(account);
        a.incomeRate += rate;
        a.hasRates = true;
    }

    function _removeIncome(address account, uint128 rate) internal {
        if (rate == 0) return;
        Account storage a = _settle(account);
        uint128 income = a.incomeRate - rate;
        a.incomeRate = income;
        a.hasRates = income != 0 || a.outgoingRate != 0;
    }

    /// @dev Undoes a stream's rates on all three accounts (the subscriber `u` already settled) and
    /// emits StreamRevoked. Leaves the stream record and the list entry to the caller.
    function _removeRates(address user, Account storage u, address author, Stream storage s) internal {
        uint96 income = s.income;
        uint96 outgoing = s.outgoing;
        uint48 projectId = s.projectId;
        _removeIncome(author, income);
        if (outgoing != income) {
            _removeIncome(_projectOwners[projectId], outgoing - income);
            _projectFeeRates[projectId] -= outgoing - income;
        }
        uint128 out = u.outgoingRate - outgoing;
        u.outgoingRate = out;
        u.hasRates = out != 0 || u.incomeRate != 0;
        emit StreamRevoked(user, author, _encode(income, outgoing, projectId));
    }

    /// @dev Removes list entry `index` by moving the last entry into its place.
    function _unlist(address user, Account storage u, uint16 index) internal {
        uint16 last = u.streamCount - 1;
        if (index != last) {
            address moved = _streamList[user][last];
            _streamList[user][index] = moved;
            _streams[user][moved].index = index;
        }
        delete _streamList[user][last];
        u.streamCount = last;
    }

    function _encode(uint96 income, uint96 outgoing, uint256 projectId) internal pure returns (uint256) {
        return uint256(income) | (uint256(outgoing) << 96) | (projectId << 192);
    }

    function _feeFor(uint256 projectId, address author) internal view returns (uint16) {
        if (projectId == 0) return 0;
        UserSettings storage us = _userSettings[projectId][author];
        return us.set ? us.projectFee : _defaultFees[projectId];
    }

    function _onlyProjectOwner(uint256 projectId) internal view {
        address owner = _projectOwners[projectId];
        if (owner == address(0)) revert StreamPayUnknownProject(projectId);
        if (owner != _sender()) revert StreamPayNotProjectOwner(projectId, _sender());
    }

    function _checkFee(uint16 fee) internal pure {
        if (fee > _MAX_PROJECT_FEE) revert StreamPayFeeTooHigh(fee, _MAX_PROJECT_FEE);
    }
}
