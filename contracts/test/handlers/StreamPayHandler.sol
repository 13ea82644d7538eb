// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {StreamPay} from "../../src/StreamPay.sol";
import {IStreamPay} from "../../src/IStreamPay.sol";
import {MockPermit2} from "../utils/MockPermit2.sol";
import {Vm} from "../utils/Vm.sol";
import {SigUtils} from "./SigUtils.sol";

/// @notice The token surface the handler needs: the 6-decimal MockToken, MockToken18 and HookToken
/// all have it.
interface IHandlerToken {
    function mint(address to, uint256 amount) external;
    function approve(address spender, uint256 amount) external returns (bool);
    function balanceOf(address account) external view returns (uint256);
    function decimals() external view returns (uint8);
}

/// @title ReentrantMerchant
/// @notice A passive account of the handler: when a hook token (HookToken) pays it, it tries to
/// take `target`'s whole StreamPay balance with `pay(itself, …)` while StreamPay's transfer is in
/// flight (the M-2 attack). The handler's exact balance checks see it if it ever works.
contract ReentrantMerchant {
    address public immutable streamPay;
    address public target;
    uint256 public attempts;
    uint256 public successes;

    constructor(address streamPay_) {
        streamPay = streamPay_;
    }

    function setTarget(address target_) external {
        target = target_;
    }

    function registerOn(address hookToken) external {
        (bool ok,) = hookToken.call(abi.encodeWithSignature("registerHook()"));
        ok;
    }

    function onTokenReceived(address, uint256) external {
        if (target == address(0)) return;
        (, bytes memory bal) = streamPay.staticcall(abi.encodeWithSignature("balanceOf(address)", target));
        uint256 all = abi.decode(bal, (uint256));
        if (all == 0) return;
        attempts++;
        (bool ok,) = streamPay.call(abi.encodeWithSignature("pay(address,uint256)", address(this), all));
        if (ok) successes++;
    }
}

/// @title StreamPayHandler
/// @notice The target of the invariant fuzzer. Every action is bounded so that it is expected to
/// succeed (or, where stated, expected to fail with one exact error); its effects are checked on
/// the spot against an independent model, and the model and ghost sums are checked by the
/// invariants after every call.
///
/// The handler never reverts: with `fail_on_revert = false` a reverting handler call is silently
/// discarded, state and ghosts included, so a violation found inside an action is recorded in
/// `violations`/`firstViolation` instead and the invariant `invariant_handlerSawNoViolation` fails.
///
/// Solvency model (independent of the contract): an account's own operations (subscribe, pay,
/// withdraw, a sponsored fee) must leave its live balance covering OPERATING_WINDOWS (2) windows of
/// its GROSS outgoing rate (income is revocable and never counts); an account with streams is
/// liquidatable once its live balance covers less than ONE window.
///
/// Keeper assumption: before every time warp (bounded to at most `liquidationWindow`) the handler
/// acts as a timely keeper and liquidates every account `isLiquidatable` reports, until none is
/// left. This is the protocol's design (SPEC §2: an account is liquidatable once it cannot cover
/// `liquidationWindow` seconds of net outflow) and the solvency invariants (no negative balance,
/// token held >= Σ positive balances) rely on it; without keepers a stream can overdraw its payer.
contract StreamPayHandler {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    uint256 internal constant BPS = 10_000;
    uint16 internal constant MAX_FEE = 2000;
    uint256 internal constant MAX_DEPOSIT_INTERNAL = 1_000_000e18; // per deposit, 18-decimal units
    uint256 internal constant MAX_RATE = 1e18; // 18-dec units per second (one token a second)
    uint256 internal constant INITIAL_DEPOSIT_INTERNAL = 1_000e18; // each account starts with (unless `empty`)
    /// @dev Passive authors that let one account open many streams (up to the cap).
    uint256 internal constant DUST_AUTHORS = 104;
    /// @dev Windows of net outflow an account's own operations must leave covered.
    uint256 internal constant OPERATING_WINDOWS = 2;
    uint256 internal constant MAX_RECORDED_SIGS = 64;
    bytes32 internal constant NONCE_USED_TOPIC = keccak256("NonceUsed(address,uint8,bytes4,uint256)");

    StreamPay public immutable sp;
    IHandlerToken public immutable token;
    /// @notice 10^(18 - token decimals): internal units per token unit.
    uint256 public immutable scale;
    /// @notice Receives withdrawals and, with a hook token, tries to re-enter StreamPay.
    ReentrantMerchant public immutable merchant;
    MockPermit2 public immutable permit2;
    uint256 public immutable window;
    /// @notice Sends every meta-transaction and liquidation; an account like the others.
    address public immutable keeper;

    address[] internal _accounts;
    uint256[] internal _keys; // signing key of _accounts[i] (an ERC-1271 wallet's is its owner's)
    uint256[] internal _projects;
    /// @dev Accounts that never act (dust authors, the merchant) but hold balances and income.
    address[] internal _passive;
    address[] internal _all; // _accounts then _passive
    /// @dev Keeper schedule: the chain time the late keeper liquidates an account at (0: none).
    mapping(address => uint256) public dueAt;
    /// @dev Seed of the keeper latencies (set by each warp).
    uint256 internal _latencySeed;

    // ---------------------------------------------------------------- model
    mapping(uint256 => address) public modelProjectOwner;
    mapping(uint256 => uint16) public modelDefaultFee;
    mapping(uint256 => mapping(address => bool)) public modelUserFeeSet;
    mapping(uint256 => mapping(address => uint16)) public modelUserFee;
    /// @notice Expected encodedRates of the stream from => to (0: no stream).
    mapping(address => mapping(address => uint256)) public modelStream;
    mapping(address => uint256) public modelStreamCount;
    mapping(address => uint256) public modelAccountNonce;
    mapping(address => mapping(bytes4 => uint256)) public modelSelectorNonce;
    mapping(address => mapping(uint256 => bool)) public modelUniqueUsed;

    // ---------------------------------------------------------------- ghosts
    uint256 public ghostDeposited; // 18-dec
    uint256 public ghostWithdrawn; // 18-dec
    uint256 public ghostLiquidations;
    uint256 public ghostMetaCalls;
    uint256 public ghostReplaysRejected;
    uint256 public ghostCrossAccountReplaysRejected;
    uint256 public ghostLateLiquidations; // liquidations with a latency > 0 after the first liquidatable second
    uint256 public ghostMaxStreams; // most streams one account held
    int256 public ghostLowestLiveAtLiquidation = type(int256).max;
    uint256 public violations;
    string public firstViolation;
    mapping(string => uint256) public calls;

    struct UsedSig {
        address signer;
        uint256 traits;
        bytes data;
        bytes signature;
    }

    UsedSig[] internal _usedSigs;

    constructor(
        StreamPay sp_,
        address token_,
        MockPermit2 permit2_,
        address keeper_,
        address[] memory accounts_,
        uint256[] memory keys_,
        bool empty
    ) {
        sp = sp_;
        token = IHandlerToken(token_);
        scale = 10 ** (18 - uint256(IHandlerToken(token_).decimals()));
        permit2 = permit2_;
        window = sp_.liquidationWindow();
        keeper = keeper_;
        merchant = new ReentrantMerchant(address(sp_));
        merchant.registerOn(token_);
        _passive.push(address(merchant));
        for (uint256 i; i < DUST_AUTHORS; ++i) {
            _passive.push(address(uint160(uint256(keccak256(abi.encode("dust author", i))))));
        }
        require(accounts_.length == keys_.length && accounts_.length >= 3, "handler: accounts");
        for (uint256 i; i < accounts_.length; ++i) {
            _accounts.push(accounts_[i]);
            _keys.push(keys_[i]);
        }
        // every account starts with a balance, so that most actions have something to move
        for (uint256 i; i < accounts_.length; ++i) {
            _all.push(accounts_[i]);
        }
        for (uint256 i; i < _passive.length; ++i) {
            _all.push(_passive[i]);
        }
        // (an `empty` deployment starts with nothing: the state H-2's free mint needed)
        uint256 initial = empty ? 0 : INITIAL_DEPOSIT_INTERNAL / scale;
        for (uint256 i; i < accounts_.length && initial != 0; ++i) {
            IHandlerToken(token_).mint(accounts_[i], initial);
            vm.prank(accounts_[i]);
            IHandlerToken(token_).approve(address(sp_), type(uint256).max);
            vm.prank(accounts_[i]);
            sp_.deposit(initial, false);
            ghostDeposited += initial * scale;
        }
        // two projects: one with a 5% default fee, one with the maximum 20% and a per-author override
        _claim(accounts_[2], 500);
        _claim(accounts_[3], MAX_FEE);
        uint256 p2 = _projects[1];
        vm.prank(accounts_[3]);
        sp_.setSettingsForUser(accounts_[0], IStreamPay.Settings(1234), p2);
        modelUserFeeSet[p2][accounts_[0]] = true;
        modelUserFee[p2][accounts_[0]] = 1234;
    }

    function _claim(address owner, uint16 fee) internal {
        vm.prank(owner);
        uint256 id = sp.claimProjectId();
        vm.prank(owner);
        sp.setDefaultSettings(IStreamPay.Settings(fee), id);
        _projects.push(id);
        modelProjectOwner[id] = owner;
        modelDefaultFee[id] = fee;
    }

    // =====================================================================================
    // views for the invariants
    // =====================================================================================

    function accounts() external view returns (address[] memory) {
        return _accounts;
    }

    /// @notice Every account that can hold a balance or receive a stream: the acting accounts, then
    /// the passive ones (merchant, dust authors).
    function allAccounts() external view returns (address[] memory) {
        return _all;
    }

    function projects() external view returns (uint256[] memory) {
        return _projects;
    }

    function usedSigCount() external view returns (uint256) {
        return _usedSigs.length;
    }

    function usedSig(uint256 i) external view returns (address, IStreamPay.SignedCall memory, bytes memory) {
        UsedSig storage u = _usedSigs[i];
        return (u.signer, IStreamPay.SignedCall(u.traits, u.data), u.signature);
    }

    // =====================================================================================
    // actions
    // =====================================================================================

    /// @notice Deposit (self or for another account; transferFrom or Permit2), direct or via bySig.
    function deposit(uint256 fromSeed, uint256 toSeed, uint256 amount, uint256 mode, uint256 via) external {
        address from = _account(fromSeed);
        address to = mode % 3 == 1 ? _account(toSeed) : from;
        bool isPermit2 = mode % 3 == 2;
        amount = _bound(amount, 1, MAX_DEPOSIT_INTERNAL / scale);
        token.mint(from, amount);
        vm.prank(from);
        token.approve(isPermit2 ? address(permit2) : address(sp), type(uint256).max);
        if (isPermit2) {
            vm.prank(from);
            permit2.approve(address(token), address(sp), uint160(amount), uint48(block.timestamp + 1));
        }
        bytes memory data = to == from
            ? abi.encodeCall(IStreamPay.deposit, (amount, isPermit2))
            : abi.encodeCall(IStreamPay.depositFor, (amount, to, isPermit2));

        int256[] memory expected = _balances();
        expected[_idx(to)] += int256(amount * scale);
        uint256 supply = sp.totalSupply();
        uint256 held = token.balanceOf(address(sp));
        uint256 fromTokens = token.balanceOf(from);
        if (!_send(from, data, via, "deposit")) return;
        ghostDeposited += amount * scale;
        calls["deposit"]++;
        _checkBalances(expected, "deposit");
        _check(sp.totalSupply() == supply + amount * scale, "deposit: totalSupply");
        _check(token.balanceOf(address(sp)) == held + amount, "deposit: tokens held");
        _check(token.balanceOf(from) == fromTokens - amount, "deposit: tokens pulled from the payer");
    }

    /// @notice A Permit2 deposit of an amount Permit2 cannot move (above uint160, H-2): it must fail
    /// with StreamPayAmountTooLarge(amount) and change nothing (on an `empty` 18-decimal
    /// deployment v1 credited 2^160 for 0 tokens).
    function depositHuge(uint256 fromSeed, uint256 extra) external {
        address from = _account(fromSeed);
        uint256 amount = (uint256(1) << 160) + extra % 3;
        vm.prank(from);
        token.approve(address(permit2), type(uint256).max);
        vm.prank(from);
        permit2.approve(address(token), address(sp), type(uint160).max, uint48(block.timestamp + 1));
        int256[] memory before = _balances();
        uint256 supply = sp.totalSupply();
        vm.prank(from);
        (bool ok, bytes memory err) = address(sp).call(abi.encodeCall(IStreamPay.deposit, (amount, true)));
        _check(
            !ok
                && keccak256(err)
                    == keccak256(abi.encodeWithSelector(IStreamPay.StreamPayAmountTooLarge.selector, amount)),
            "a Permit2 deposit above uint160 was not refused with StreamPayAmountTooLarge"
        );
        _checkBalances(before, "a refused deposit changed balances");
        _check(sp.totalSupply() == supply, "a refused deposit changed totalSupply");
        calls["depositHugeRejected"]++;
    }

    /// @notice Withdraw up to what the account can spend while staying solvent.
    function withdraw(uint256 fromSeed, uint256 toSeed, uint256 amount, bool toOther, uint256 via) external {
        address from = _account(fromSeed);
        uint256 available = _spendable(from);
        if (available < scale) return;
        amount = _bound(amount, scale, available);
        // to another account, or to the merchant, whose token hook (if any) tries to take `from`'s
        // whole balance while the transfer is in flight
        address to = toOther ? (toSeed % 3 == 0 ? address(merchant) : _account(toSeed)) : from;
        merchant.setTarget(from);
        uint256 burned = (amount / scale) * scale;
        bytes memory data = toOther
            ? abi.encodeCall(IStreamPay.withdrawTo, (to, amount))
            : abi.encodeCall(IStreamPay.withdraw, (amount));

        int256[] memory expected = _balances();
        expected[_idx(from)] -= int256(burned);
        uint256 toTokens = token.balanceOf(to);
        uint256 supply = sp.totalSupply();
        if (!_send(from, data, via, "withdraw")) return;
        ghostWithdrawn += burned;
        calls["withdraw"]++;
        _checkBalances(expected, "withdraw");
        _check(token.balanceOf(to) == toTokens + amount / scale, "withdraw: tokens received");
        merchant.setTarget(address(0));
        _check(sp.totalSupply() == supply - burned, "withdraw: totalSupply");
    }

    /// @notice Pay any account (itself included) up to what the payer can spend.
    function pay(uint256 fromSeed, uint256 toSeed, uint256 amount, uint256 via) external {
        address from = _account(fromSeed);
        address to = _account(toSeed);
        uint256 available = _spendable(from);
        if (available == 0) return;
        amount = _bound(amount, 1, available);
        int256[] memory expected = _balances();
        expected[_idx(from)] -= int256(amount);
        expected[_idx(to)] += int256(amount);
        if (!_send(from, abi.encodeCall(IStreamPay.pay, (to, amount)), via, "pay")) return;
        calls["pay"]++;
        _checkBalances(expected, "pay");
    }

    /// @notice Subscribe (or re-subscribe) with or without a project, at a rate the subscriber
    /// can cover for two liquidation windows. When the model's maximum rate is not capped, one more
    /// per second must first be rejected with the exact StreamPayInsufficientBalance.
    function subscribe(uint256 fromSeed, uint256 toSeed, uint256 rate, uint256 projectSeed, uint256 via) external {
        address from = _account(fromSeed);
        address author = _account(toSeed);
        if (author == from) author = _account(_idx(from) + 1);
        uint256 projectId = projectSeed % 3 == 0 ? 0 : _projects[projectSeed % 3 - 1];
        _subscribeChecked(from, author, rate, projectId, via);
    }

    /// @notice Opens `count` streams from one account to passive dust authors (many streams per
    /// account, up to the cap): past `maxStreams()` the next one must fail with
    /// StreamPayTooManyStreams(from) exactly.
    function subscribeMany(uint256 fromSeed, uint256 count, uint256 rate, uint256 projectSeed) external {
        address from = _account(fromSeed);
        count = _bound(count, 1, 60);
        uint256 projectId = projectSeed % 3 == 0 ? 0 : _projects[projectSeed % 3 - 1];
        uint256 cap = sp.maxStreams();
        uint256 next = uint256(keccak256(abi.encode(rate, "dust"))) % DUST_AUTHORS;
        for (uint256 k; k < count; ++k) {
            address author = _passive[1 + (next + k) % DUST_AUTHORS];
            if (modelStreamCount[from] >= cap && modelStream[from][author] == 0) {
                vm.prank(from);
                (bool ok, bytes memory err) =
                    address(sp).call(abi.encodeCall(IStreamPay.subscribe, (author, uint96(1), projectId)));
                _check(
                    !ok
                        && keccak256(err)
                            == keccak256(abi.encodeWithSelector(IStreamPay.StreamPayTooManyStreams.selector, from)),
                    "a stream past the cap was not refused with StreamPayTooManyStreams"
                );
                calls["streamCapRejected"]++;
                return;
            }
            // small rates, so that a two-window balance covers many of them
            uint256 maxRate = _maxRate(from, author);
            if (maxRate == 0) return;
            _subscribeChecked(from, author, _bound(uint256(keccak256(abi.encode(rate, k))), 1, maxRate / 8 + 1), projectId, 0);
        }
        calls["subscribeMany"]++;
    }

    /// @notice Two accounts stream to each other (a cycle), each at a rate it can cover itself.
    function cycle(uint256 aSeed, uint256 bSeed, uint256 rateA, uint256 rateB, uint256 via) external {
        address a = _account(aSeed);
        address b = _account(bSeed);
        if (a == b) b = _account(_idx(a) + 1);
        _subscribeChecked(a, b, rateA, 0, via);
        _subscribeChecked(b, a, rateB, 0, via >> 8);
        if (modelStream[a][b] != 0 && modelStream[b][a] != 0) calls["cycle"]++;
    }

    function _subscribeChecked(address from, address author, uint256 rate, uint256 projectId, uint256 via) internal {
        if (modelStream[from][author] == 0 && modelStreamCount[from] >= sp.maxStreams()) {
            vm.prank(from);
            (bool ok, bytes memory err) =
                address(sp).call(abi.encodeCall(IStreamPay.subscribe, (author, uint96(1), projectId)));
            _check(
                !ok
                    && keccak256(err)
                        == keccak256(abi.encodeWithSelector(IStreamPay.StreamPayTooManyStreams.selector, from)),
                "a stream past the cap was not refused with StreamPayTooManyStreams"
            );
            calls["streamCapRejected"]++;
            return;
        }
        uint256 maxRate = _maxRate(from, author);
        _checkRateAboveMaxRejected(from, author, maxRate, projectId);
        if (maxRate == 0) return;
        rate = _bound(rate, 1, maxRate);

        uint256 fee = rate * _fee(projectId, author) / BPS;
        uint256 encoded = (rate - fee) | (rate << 96) | (projectId << 192);
        int256[] memory expected = _balances();
        if (!_send(from, abi.encodeCall(IStreamPay.subscribe, (author, uint96(rate), projectId)), via, "subscribe")) {
            return;
        }
        calls[projectId == 0 ? "subscribe" : "subscribeWithProject"]++;
        if (modelStream[from][author] == 0) {
            modelStreamCount[from]++;
            if (modelStreamCount[from] > ghostMaxStreams) ghostMaxStreams = modelStreamCount[from];
        }
        modelStream[from][author] = encoded;
        _checkBalances(expected, "subscribe moves no balance");
        (bool active, uint256 rates) = sp.subscriptions(from, author);
        _check(active && rates == encoded, "subscribe: encoded rates");
    }

    function unsubscribe(uint256 fromSeed, uint256 index, uint256 via) external {
        address from = _account(fromSeed);
        (address[] memory authors,) = sp.allSubscriptions(from);
        if (authors.length == 0) return;
        address author = authors[index % authors.length];
        int256[] memory expected = _balances();
        if (!_send(from, abi.encodeCall(IStreamPay.unsubscribe, (author)), via, "unsubscribe")) return;
        calls["unsubscribe"]++;
        delete modelStream[from][author];
        modelStreamCount[from]--;
        _checkBalances(expected, "unsubscribe moves no balance");
        (bool active, uint256 rates) = sp.subscriptions(from, author);
        _check(!active && rates == 0, "unsubscribe: stream gone");
    }

    /// @notice Liquidates `account` if it is liquidatable, else checks that liquidation reverts.
    function liquidate(uint256 accountSeed) external {
        address account = _account(accountSeed);
        bool expected = _expectLiquidatable(account);
        _check(sp.isLiquidatable(account) == expected, "isLiquidatable disagrees with the model");
        if (expected) {
            _liquidate(account);
        } else {
            vm.prank(keeper);
            (bool ok, bytes memory err) = address(sp).call(abi.encodeCall(IStreamPay.liquidate, (account)));
            _check(
                !ok
                    && keccak256(err)
                        == keccak256(abi.encodeWithSelector(IStreamPay.StreamPayNotLiquidatable.selector, account)),
                "liquidate of a solvent account did not revert with StreamPayNotLiquidatable"
            );
            calls["liquidateRejected"]++;
        }
    }

    /// @notice Time passes (at most one liquidation window) with a LATE keeper: it liquidates each
    /// account some latency after the first second it is liquidatable, anywhere inside the window
    /// (0 .. window - 1 s, drawn per account from `latencySeed`), never at a fixed zero latency.
    function warp(uint256 secs, uint256 latencySeed) external {
        _latencySeed = latencySeed;
        secs = _bound(secs, 1, window);
        uint256 target = block.timestamp + secs;
        for (uint256 guard; guard <= _all.length; ++guard) {
            _schedule();
            (address next, uint256 due) = _nextDue();
            if (next == address(0) || due > target) break;
            if (due > block.timestamp) vm.warp(due);
            _keeperLiquidate(next);
        }
        vm.warp(target);
        vm.roll(block.number + 1);
        calls["warp"]++;
    }

    /// @dev (Re)computes when the late keeper acts on each acting account: for one that is not
    /// liquidatable now, the first second it will be (closed form from its live balance and rates,
    /// valid while nothing else happens: warp is the only thing that moves time) plus its latency;
    /// for one that already is, the schedule stays (it became liquidatable earlier), or, if none
    /// (it became so at this very second), now plus its latency.
    function _schedule() internal {
        for (uint256 i; i < _accounts.length; ++i) {
            address a = _accounts[i];
            bool expected = _expectLiquidatable(a);
            _check(sp.isLiquidatable(a) == expected, "keeper: isLiquidatable disagrees with the model");
            uint256 latency = uint256(keccak256(abi.encode(_latencySeed, a))) % window;
            if (expected) {
                if (dueAt[a] == 0) dueAt[a] = block.timestamp + latency;
                continue;
            }
            dueAt[a] = 0;
            if (modelStreamCount[a] == 0) continue;
            (, uint256 inc, uint256 out,) = sp.accountInfo(a);
            if (out <= inc) continue;
            int256 live = sp.signedBalanceOf(a);
            uint256 cover = _liquidationCover(a);
            // live >= cover here; first t with live - (out - inc) * t < cover
            uint256 first = block.timestamp + (uint256(live) - cover) / (out - inc) + 1;
            dueAt[a] = first + latency;
        }
    }

    function _nextDue() internal view returns (address next, uint256 due) {
        due = type(uint256).max;
        for (uint256 i; i < _accounts.length; ++i) {
            uint256 d = dueAt[_accounts[i]];
            if (d != 0 && d < due) (next, due) = (_accounts[i], d);
        }
    }

    function _keeperLiquidate(address a) internal {
        dueAt[a] = 0;
        if (!_expectLiquidatable(a)) return; // rescued in the meantime (cannot happen during a warp)
        int256 live = sp.signedBalanceOf(a);
        if (live < ghostLowestLiveAtLiquidation) ghostLowestLiveAtLiquidation = live;
        _check(live >= 0, "late keeper (inside the window) found a negative balance");
        _liquidate(a);
        ghostLateLiquidations++;
    }

    /// @notice A signed payment whose signer also pays the relayer a fee (sponsoredCall in bySig).
    function sponsoredPay(uint256 fromSeed, uint256 toSeed, uint256 amount, uint256 fee, uint256 nonceSeed) external {
        address from = _account(fromSeed);
        address to = _account(toSeed);
        uint256 available = _spendable(from);
        if (available < 2) return;
        amount = _bound(amount, 1, available - 1);
        fee = _bound(fee, 1, available - amount);
        bytes memory inner = abi.encodeCall(IStreamPay.pay, (to, amount));
        bytes memory data = abi.encodeCall(IStreamPay.sponsoredCall, (address(sp), fee, inner, ""));
        int256[] memory expected = _balances();
        expected[_idx(from)] -= int256(amount);
        expected[_idx(to)] += int256(amount);
        if (from != keeper) {
            // the relayer (the transaction's sender) earns the fee; a self-relayed call charges nothing
            expected[_idx(from)] -= int256(fee);
            expected[_idx(keeper)] += int256(fee);
        }
        if (!_bySig(from, data, nonceSeed % 3, nonceSeed, "sponsoredPay")) return;
        calls["sponsoredPay"]++;
        _checkBalances(expected, "sponsoredPay");
    }

    /// @notice bySig(multicall([pay, pay, ...])). With `overdraw`, the last payment exceeds what is
    /// left: the whole batch must revert and change nothing (no balance, no nonce).
    function metaBatch(uint256 fromSeed, uint256 n, uint256 seed, bool overdraw, uint256 nonceSeed) external {
        address from = _account(fromSeed);
        uint256 available = _spendable(from);
        n = _bound(n, 1, 5);
        if (available < n) return;
        (bytes[] memory items, int256[] memory expected) = _batch(from, n, seed, overdraw, available);
        bytes memory data = abi.encodeCall(IStreamPay.multicall, (items));
        if (overdraw) {
            int256[] memory before = _balances();
            (uint256 traits, bytes memory sig) = _signFor(from, data, nonceSeed % 3, nonceSeed);
            vm.prank(keeper);
            (bool ok, bytes memory err) =
                address(sp).call(abi.encodeCall(IStreamPay.bySig, (from, IStreamPay.SignedCall(traits, data), sig)));
            // the last payment leaves one wei less than the two windows of cover (`_spendable`)
            uint256 cover = _operatingCover(from);
            _check(
                !ok
                    && keccak256(err)
                        == keccak256(
                            abi.encodeWithSelector(
                                IStreamPay.StreamPayInsufficientBalance.selector, from, 1, cover > 0 ? cover - 1 : 0
                            )
                        ),
                "overdrawing batch: not StreamPayInsufficientBalance(from, 1, cover - 1)"
            );
            _checkBalances(before, "a failed batch changed balances");
            calls["metaBatchReverted"]++;
            return; // the nonce model is untouched: invariant_nonceViewsMatchModel proves nothing was consumed
        }
        if (!_bySig(from, data, nonceSeed % 3, nonceSeed, "metaBatch")) return;
        calls["metaBatch"]++;
        _checkBalances(expected, "metaBatch");
    }

    /// @dev n payments from `from` to other accounts, summing to at most `available` (or, with
    /// `overdraw`, exactly `available + 1`), and the balances they should leave.
    function _batch(address from, uint256 n, uint256 seed, bool overdraw, uint256 available)
        internal
        view
        returns (bytes[] memory items, int256[] memory expected)
    {
        items = new bytes[](n);
        expected = _balances();
        uint256 left = available;
        for (uint256 i; i < n; ++i) {
            // never to itself: a self-payment gives back what it takes, which would blur `left`
            address to = _account(uint256(keccak256(abi.encode(seed, i))));
            if (to == from) to = _account(_idx(from) + 1);
            uint256 amount = overdraw && i == n - 1
                ? left + 1
                : _bound(uint256(keccak256(abi.encode(seed, i, "amount"))), 1, left - (n - 1 - i));
            left -= overdraw && i == n - 1 ? left : amount;
            items[i] = abi.encodeCall(IStreamPay.pay, (to, amount));
            expected[_idx(from)] -= int256(amount);
            expected[_idx(to)] += int256(amount);
        }
    }

    /// @notice The signer cancels `advance` account nonces (directly or by a signed call).
    function cancelNonces(uint256 fromSeed, uint256 advance, bool signed, uint256 nonceSeed) external {
        address from = _account(fromSeed);
        advance = _bound(advance, 1, 3);
        bytes memory data = abi.encodeCall(IStreamPay.useBySigAccountNonce, (uint32(advance)));
        if (signed) {
            // with an account nonce, the signed call consumes one itself before skipping `advance`
            if (!_bySig(from, data, nonceSeed % 3, nonceSeed, "cancelNonces")) return;
        } else {
            vm.prank(from);
            (bool ok, bytes memory err) = address(sp).call(data);
            if (!ok) return _violation("cancelNonces", err);
        }
        modelAccountNonce[from] += advance;
        calls["cancelNonces"]++;
    }

    /// @notice A project owner changes a fee (existing streams must keep their rates).
    function setFee(uint256 projectSeed, uint256 authorSeed, uint256 fee, bool perAuthor) external {
        uint256 projectId = _projects[projectSeed % _projects.length];
        address owner = modelProjectOwner[projectId];
        address author = _account(authorSeed);
        fee = _bound(fee, 0, MAX_FEE + 500);
        bytes memory data = perAuthor
            ? abi.encodeCall(IStreamPay.setSettingsForUser, (author, IStreamPay.Settings(uint16(fee)), projectId))
            : abi.encodeCall(IStreamPay.setDefaultSettings, (IStreamPay.Settings(uint16(fee)), projectId));
        vm.prank(owner);
        (bool ok, bytes memory err) = address(sp).call(data);
        if (fee > MAX_FEE) {
            _check(
                !ok
                    && keccak256(err)
                        == keccak256(
                            abi.encodeWithSelector(IStreamPay.StreamPayFeeTooHigh.selector, uint16(fee), MAX_FEE)
                        ),
                "setFee above the maximum"
            );
            return;
        }
        if (!ok) return _violation("setFee", err);
        if (perAuthor) {
            modelUserFeeSet[projectId][author] = true;
            modelUserFee[projectId][author] = uint16(fee);
        } else {
            modelDefaultFee[projectId] = uint16(fee);
        }
        _check(sp.projectFeeFor(projectId, author) == _fee(projectId, author), "projectFeeFor");
        calls["setFee"]++;
    }

    // =====================================================================================
    // keeper
    // =====================================================================================

    function _liquidate(address account) internal {
        int256 live = sp.signedBalanceOf(account);
        uint256 reward = live > 0 ? uint256(live) : 0;
        int256[] memory expected = _balances();
        expected[_idx(account)] -= int256(reward);
        expected[_idx(keeper)] += int256(reward);
        vm.prank(keeper);
        (bool ok, bytes memory err) = address(sp).call(abi.encodeCall(IStreamPay.liquidate, (account)));
        if (!ok) return _violation("liquidate", err);
        ghostLiquidations++;
        calls["liquidate"]++;
        for (uint256 i; i < _all.length; ++i) {
            delete modelStream[account][_all[i]];
        }
        modelStreamCount[account] = 0;
        _checkBalances(expected, "liquidate: reward moves the positive balance to the keeper");
        (address[] memory authors,) = sp.allSubscriptions(account);
        (,, uint256 out,) = sp.accountInfo(account);
        _check(authors.length == 0 && out == 0, "liquidate: every stream stopped");
        _check(!sp.isLiquidatable(account), "liquidate: still liquidatable");
    }

    /// @dev Independent liquidation rule: an account with streams whose live balance cannot cover
    /// ONE `window` of its gross outgoing rate (or is negative).
    function _expectLiquidatable(address account) internal view returns (bool) {
        if (modelStreamCount[account] == 0) return false;
        int256 live = sp.signedBalanceOf(account);
        return live < int256(_liquidationCover(account));
    }

    /// @dev Subscribing at `maxRate + 1` (when the model's maximum is not the MAX_RATE cap) must
    /// revert with StreamPayInsufficientBalance(from, needed, live): the new gross outflow is then
    /// floor(live / (2 * window)) + 1, so needed = that * 2 * window - live. With maxRate == 0 (no
    /// rate fits) this checks that a rate of 1 fails. Skipped when `from` is in debt.
    function _checkRateAboveMaxRejected(address from, address author, uint256 maxRate, uint256 projectId) internal {
        if (maxRate >= MAX_RATE) return;
        int256 live = sp.signedBalanceOf(from);
        if (live < 0) return;
        (,, uint256 out,) = sp.accountInfo(from);
        uint256 old = modelStream[from][author];
        uint256 oldOut = (old >> 96) & type(uint96).max;
        uint256 newOut = out - oldOut + maxRate + 1;
        uint256 needed = newOut * OPERATING_WINDOWS * window - uint256(live);
        vm.prank(from);
        (bool ok, bytes memory err) =
            address(sp).call(abi.encodeCall(IStreamPay.subscribe, (author, uint96(maxRate + 1), projectId)));
        _check(
            !ok
                && keccak256(err)
                    == keccak256(
                        abi.encodeWithSelector(
                            IStreamPay.StreamPayInsufficientBalance.selector, from, needed, uint256(live)
                        )
                    ),
            "subscribe above the model's maximum rate was not rejected with the exact error"
        );
        calls["subscribeAboveMaxRejected"]++;
    }

    // =====================================================================================
    // sending (direct or signed)
    // =====================================================================================

    /// @dev via % 4: 0 direct; 1 bySig(data); 2 bySig(multicall([data])); 3 bySig(sponsoredCall(sp, 0, data)).
    function _send(address from, bytes memory data, uint256 via, string memory what) internal returns (bool) {
        uint256 mode = via % 4;
        if (mode == 0) {
            vm.prank(from);
            (bool ok, bytes memory err) = address(sp).call(data);
            if (!ok) _violation(what, err);
            return ok;
        }
        bytes memory signed = data;
        if (mode == 2) {
            bytes[] memory items = new bytes[](1);
            items[0] = data;
            signed = abi.encodeCall(IStreamPay.multicall, (items));
        } else if (mode == 3) {
            signed = abi.encodeCall(IStreamPay.sponsoredCall, (address(sp), 0, data, ""));
        }
        return _bySig(from, signed, (via >> 2) % 3, via >> 4, what);
    }

    /// @dev Signs `data` for `signer` with a nonce of type `nonceType_` chosen from `nonceSeed` (bit 2
    /// restricts the relayer to the keeper), sends it from the keeper, checks the NonceUsed event,
    /// updates the nonce model, records the signature, and proves an immediate replay is rejected.
    function _bySig(address signer, bytes memory data, uint256 nonceType_, uint256 nonceSeed, string memory what)
        internal
        returns (bool)
    {
        (uint256 traits, bytes memory sig) = _signFor(signer, data, nonceType_, nonceSeed);
        bytes memory call = abi.encodeCall(IStreamPay.bySig, (signer, IStreamPay.SignedCall(traits, data), sig));
        if ((traits >> 128) & (2 ** 80 - 1) != 0) _checkOtherRelayerRejected(call);
        vm.recordLogs();
        vm.prank(keeper);
        (bool ok, bytes memory err) = address(sp).call(call);
        if (!ok) {
            _violation(string.concat("bySig ", what), err);
            return false;
        }
        _afterSigned(signer, traits, data, sig, call);
        return true;
    }

    function _afterSigned(address signer, uint256 traits, bytes memory data, bytes memory sig, bytes memory call)
        internal
    {
        ghostMetaCalls++;
        uint8 nonceType = uint8(traits >> 254);
        uint256 nonce = traits & type(uint128).max;
        bytes4 selector = nonceType == 1 ? bytes4(data) : bytes4(0);
        _checkNonceUsed(vm.getRecordedLogs(), signer, nonceType, selector, nonce);
        if (nonceType == 0) modelAccountNonce[signer]++;
        else if (nonceType == 1) modelSelectorNonce[signer][selector]++;
        else modelUniqueUsed[signer][nonce] = true;
        if (_usedSigs.length < MAX_RECORDED_SIGS) _usedSigs.push(UsedSig(signer, traits, data, sig));
        _checkReplayRejected(
            call, abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, signer, nonceType, nonce)
        );
        _checkReplayAsOtherAccountsRejected(signer, traits, data, sig);
    }

    /// @dev The same signature presented as every OTHER account of the same key (an EOA and the
    /// ERC-1271 wallet it owns, both ways) must fail and change nothing (M-1).
    function _checkReplayAsOtherAccountsRejected(address signer, uint256 traits, bytes memory data, bytes memory sig)
        internal
    {
        uint256 key = _keys[_idx(signer)];
        for (uint256 i; i < _accounts.length; ++i) {
            address other = _accounts[i];
            if (other == signer || _keys[i] != key) continue;
            int256[] memory before = _balances();
            vm.prank(keeper);
            (bool ok,) = address(sp).call(
                abi.encodeCall(IStreamPay.bySig, (other, IStreamPay.SignedCall(traits, data), sig))
            );
            _check(!ok, "a signature made for one account ran as another account of the same key");
            _checkBalances(before, "a cross-account replay changed balances");
            ghostCrossAccountReplaysRejected++;
        }
    }

    /// @dev A call restricted to the keeper, sent by another account first: StreamPayWrongRelayer.
    function _checkOtherRelayerRejected(bytes memory call) internal {
        address other = _accounts[0] == keeper ? _accounts[1] : _accounts[0];
        vm.prank(other);
        (bool ok, bytes memory err) = address(sp).call(call);
        _check(
            !ok
                && keccak256(err)
                    == keccak256(abi.encodeWithSelector(IStreamPay.StreamPayWrongRelayer.selector, other)),
            "a call restricted to the keeper was not rejected from another relayer"
        );
        calls["wrongRelayerRejected"]++;
    }

    function _checkReplayRejected(bytes memory call, bytes memory expectedError) internal {
        vm.prank(keeper);
        (bool replayed, bytes memory err) = address(sp).call(call);
        _check(
            !replayed && keccak256(err) == keccak256(expectedError),
            "an immediate replay was not rejected with StreamPayWrongNonce"
        );
        ghostReplaysRejected++;
    }

    function _signFor(address signer, bytes memory data, uint256 nonceType, uint256 nonceSeed)
        internal
        view
        returns (uint256 traits, bytes memory sig)
    {
        uint256 nonce;
        if (nonceType == 0) {
            nonce = modelAccountNonce[signer];
        } else if (nonceType == 1) {
            nonce = modelSelectorNonce[signer][bytes4(data)];
        } else {
            // small nonces collide often (exercising the "used" bitmap), hashed ones spread over words
            nonce = (nonceSeed >> 3) & 1 == 0
                ? (nonceSeed >> 8) % 600
                : uint256(keccak256(abi.encode(nonceSeed))) & type(uint128).max;
            while (modelUniqueUsed[signer][nonce]) nonce = (nonce + 1) & type(uint128).max;
        }
        address allowed = (nonceSeed >> 2) & 1 == 1 ? keeper : address(0);
        traits = SigUtils.traits(nonceType, block.timestamp + 1 hours, allowed, nonce);
        sig = SigUtils.signCallAs(_keys[_idx(signer)], signer, address(sp), traits, data);
    }

    function _checkNonceUsed(Vm.Log[] memory logs, address signer, uint8 nonceType, bytes4 selector, uint256 nonce)
        internal
    {
        uint256 found;
        bool exact;
        for (uint256 i; i < logs.length; ++i) {
            if (logs[i].emitter != address(sp) || logs[i].topics.length == 0) continue;
            if (logs[i].topics[0] != NONCE_USED_TOPIC) continue;
            found++;
            if (
                logs[i].topics.length == 2 && logs[i].topics[1] == bytes32(uint256(uint160(signer)))
                    && keccak256(logs[i].data) == keccak256(abi.encode(nonceType, selector, nonce))
            ) exact = true;
        }
        _check(found >= 1 && exact, "NonceUsed(signer, nonceType, selector, nonce) not emitted as expected");
    }

    // =====================================================================================
    // helpers
    // =====================================================================================

    function _account(uint256 seed) internal view returns (address) {
        return _accounts[seed % _accounts.length];
    }

    function _idx(address a) internal view returns (uint256) {
        for (uint256 i; i < _all.length; ++i) {
            if (_all[i] == a) return i;
        }
        revert("handler: unknown account");
    }

    function _fee(uint256 projectId, address author) internal view returns (uint256) {
        if (projectId == 0) return 0;
        return modelUserFeeSet[projectId][author] ? modelUserFee[projectId][author] : modelDefaultFee[projectId];
    }

    /// @dev Highest rate `from` can stream to `author` (replacing any current stream to it) and
    /// still cover OPERATING_WINDOWS windows of its gross outflow; capped at MAX_RATE; 0 if none.
    function _maxRate(address from, address author) internal view returns (uint256) {
        (,, uint256 out,) = sp.accountInfo(from);
        int256 live = sp.signedBalanceOf(from);
        if (live < 0) return 0;
        uint256 old = modelStream[from][author];
        uint256 oldOut = (old >> 96) & type(uint96).max;
        // income is revocable and never counts: only the balance covers the gross outflow
        uint256 ceiling = uint256(live) / (OPERATING_WINDOWS * window) + oldOut;
        if (ceiling <= out) return 0;
        uint256 maxRate = ceiling - out;
        return maxRate > MAX_RATE ? MAX_RATE : maxRate;
    }

    /// @dev Live balance below which the account is liquidatable: ONE `window` of its gross outflow.
    function _liquidationCover(address a) internal view returns (uint256) {
        (,, uint256 out,) = sp.accountInfo(a);
        return out * window;
    }

    /// @dev Live balance the account's own operations must leave: OPERATING_WINDOWS windows of its
    /// net outflow.
    function _operatingCover(address a) internal view returns (uint256) {
        return OPERATING_WINDOWS * _liquidationCover(a);
    }

    /// @dev What `a` can pay or withdraw now and still cover two windows.
    function _spendable(address a) internal view returns (uint256) {
        int256 live = sp.signedBalanceOf(a);
        int256 req = int256(_operatingCover(a));
        return live > req ? uint256(live - req) : 0;
    }

    /// @dev Live balances of the acting accounts and the merchant (the first entries of `_all`):
    /// the dust authors' balances move only with time, never within one action's timestamp.
    function _balances() internal view returns (int256[] memory b) {
        b = new int256[](_accounts.length + 1);
        for (uint256 i; i < b.length; ++i) {
            b[i] = sp.signedBalanceOf(_all[i]);
        }
    }

    function _checkBalances(int256[] memory expected, string memory what) internal {
        for (uint256 i; i < expected.length; ++i) {
            int256 actual = sp.signedBalanceOf(_all[i]);
            if (actual != expected[i]) {
                return _check(
                    false,
                    string.concat(
                        what,
                        ": balance of ",
                        vm.toString(_all[i]),
                        " is ",
                        vm.toString(actual),
                        ", expected ",
                        vm.toString(expected[i])
                    )
                );
            }
        }
    }

    function _bound(uint256 x, uint256 lo, uint256 hi) internal pure returns (uint256) {
        if (x >= lo && x <= hi) return x;
        return lo + x % (hi - lo + 1);
    }

    function _check(bool ok, string memory what) internal {
        if (ok) return;
        if (violations == 0) firstViolation = what;
        violations++;
    }

    function _violation(string memory what, bytes memory err) internal {
        _check(false, string.concat("unexpected revert in ", what, ": ", vm.toString(err)));
    }
}
