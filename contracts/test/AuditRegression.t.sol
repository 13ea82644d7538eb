// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {IPermit2} from "@1inch/solidity-utils/contracts/interfaces/IPermit2.sol";

import {StreamPay} from "../src/StreamPay.sol";
import {IStreamPay} from "../src/IStreamPay.sol";
import {Base} from "./utils/Base.sol";
import {Vm} from "./utils/Vm.sol";
import {ERC1271Wallet} from "./mocks/ERC1271Wallet.sol";
import {MockToken18, HookToken, HookMerchant} from "./mocks/Tokens.sol";

/// @title AuditRegressionTest
/// @notice One regression test (or more) per finding of the contract audit
/// (`shared/reviews/contracts.md`: C-1, H-1, H-2, M-1, M-2, L-1, L-2, I-1, I-3). Each states the
/// property the finding broke and checks it end to end, so it fails on the v1 contract (d342df7)
/// and passes on v2.
///
/// So that the same file compiles and runs against v1 (to prove "fails before"), functions that
/// only exist in v2 are called by low-level call, v2 error selectors are spelled out, and the
/// bySig helper signs in the digest format the deployment accepts: v2's signer-bound
/// `SignedCall(address signer,uint256 traits,bytes data)` (checked against `hashBySig`), or v1's
/// `SignedCall(uint256 traits,bytes data)` when the deployment has no v2 `hashBySig`. Digests are
/// computed here, independently of the contract.
contract AuditRegressionTest is Base {
    event log_named_uint(string key, uint256 val);

    bytes32 internal constant DOMAIN_TYPEHASH =
        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)");
    bytes32 internal constant V1_SIGNED_CALL_TYPEHASH = keccak256("SignedCall(uint256 traits,bytes data)");
    bytes32 internal constant V2_SIGNED_CALL_TYPEHASH =
        keccak256("SignedCall(address signer,uint256 traits,bytes data)");

    // v2 errors, spelled out so this file also compiles against v1's IStreamPay
    bytes4 internal constant ERR_REENTRANT = bytes4(keccak256("StreamPayReentrantCall(address)"));
    bytes4 internal constant ERR_FEE_ABOVE_MAX =
        bytes4(keccak256("StreamPayProjectFeeAboveMax(uint256,uint16,uint16)"));
    bytes4 internal constant ERR_NOT_PENDING_OWNER =
        bytes4(keccak256("StreamPayNotPendingProjectOwner(uint256,address)"));

    uint256 internal constant W = LIQUIDATION_WINDOW;

    // =====================================================================================
    // signing helpers
    // =====================================================================================

    function _domain(address spAddr) internal view returns (bytes32) {
        return keccak256(abi.encode(DOMAIN_TYPEHASH, keccak256("StreamPay"), keccak256("1"), block.chainid, spAddr));
    }

    function _digestV1(address spAddr, uint256 traits, bytes memory data) internal view returns (bytes32) {
        bytes32 structHash = keccak256(abi.encode(V1_SIGNED_CALL_TYPEHASH, traits, keccak256(data)));
        return keccak256(abi.encodePacked(hex"1901", _domain(spAddr), structHash));
    }

    function _digestV2(address spAddr, address signer, uint256 traits, bytes memory data)
        internal
        view
        returns (bytes32)
    {
        bytes32 structHash = keccak256(abi.encode(V2_SIGNED_CALL_TYPEHASH, signer, traits, keccak256(data)));
        return keccak256(abi.encodePacked(hex"1901", _domain(spAddr), structHash));
    }

    /// @dev The digest `signer` must sign for `spAddr`: v2's if the deployment has v2's
    /// `hashBySig(address,(uint256,bytes))` (and then it must equal the independent digest), else v1's.
    function _digest(address spAddr, address signer, uint256 traits, bytes memory data)
        internal
        view
        returns (bytes32)
    {
        (bool v2, bytes memory ret) = spAddr.staticcall(
            abi.encodeWithSignature("hashBySig(address,(uint256,bytes))", signer, IStreamPay.SignedCall(traits, data))
        );
        if (!v2) return _digestV1(spAddr, traits, data);
        bytes32 expected = _digestV2(spAddr, signer, traits, data);
        assertEq(abi.decode(ret, (bytes32)), expected, "hashBySig vs the independent signer-bound digest");
        return expected;
    }

    function _sig(uint256 pk, bytes32 digest) internal pure returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, digest);
        return abi.encodePacked(r, s, v);
    }

    function _traits(uint256 nonceType, uint256 nonce) internal view returns (uint256) {
        return (nonceType << 254) | ((block.timestamp + 30 days) << 208) | nonce;
    }

    /// @dev `bySig(signer, (traits, data), pk's signature)` calldata for `spAddr`.
    function _signed(address spAddr, uint256 pk, address signer, uint256 traits, bytes memory data)
        internal
        view
        returns (bytes memory)
    {
        bytes memory sig = _sig(pk, _digest(spAddr, signer, traits, data));
        return abi.encodeCall(IStreamPay.bySig, (signer, IStreamPay.SignedCall(traits, data), sig));
    }

    function _as(address from, address target, bytes memory data) internal returns (bool ok, bytes memory ret) {
        vm.prank(from);
        (ok, ret) = target.call(data);
    }

    // =====================================================================================
    // scenario helpers
    // =====================================================================================

    /// @dev Highest rate `from` may stream to `author` now, whatever solvency rule the deployment
    /// applies: found by trying subscribes on a snapshot (binary search up to `hi`).
    function _maxAcceptedRate(address from, address author, uint256 hi) internal returns (uint96) {
        uint256 lo = 0;
        while (lo < hi) {
            uint256 mid = (lo + hi + 1) / 2;
            uint256 snap = vm.snapshotState();
            (bool ok,) = _as(from, address(sp), abi.encodeCall(IStreamPay.subscribe, (author, uint96(mid), 0)));
            vm.revertToState(snap);
            if (ok) lo = mid;
            else hi = mid - 1;
        }
        return uint96(lo);
    }

    /// @dev First timestamp in (now, now + horizon] at which `account` is liquidatable, or 0 if it is
    /// not by then (binary search: with its state unchanged, liquidatability is monotone in time).
    function _firstLiquidatableAt(address account, uint256 horizon) internal returns (uint256) {
        uint256 t0 = block.timestamp;
        vm.warp(t0 + horizon);
        bool late = sp.isLiquidatable(account);
        vm.warp(t0);
        if (!late) return 0;
        if (sp.isLiquidatable(account)) return t0;
        uint256 lo = t0; // not liquidatable
        uint256 hi = t0 + horizon; // liquidatable
        while (hi - lo > 1) {
            uint256 mid = (lo + hi) / 2;
            vm.warp(mid);
            if (sp.isLiquidatable(account)) hi = mid;
            else lo = mid;
        }
        vm.warp(t0);
        return hi;
    }

    function _positiveSum(address[] memory accts) internal view returns (uint256 sum) {
        for (uint256 i; i < accts.length; ++i) {
            int256 b = sp.signedBalanceOf(accts[i]);
            if (b > 0) sum += uint256(b);
        }
    }

    // =====================================================================================
    // C-1: liquidation always fits in one transaction
    // =====================================================================================

    /// @dev An attacker opens as many streams as the contract lets it (aiming at 700: past the
    /// ~650 that one 2^24-gas transaction can liquidate at ~26k gas a stream), each to a distinct
    /// author under its own project (distinct owner, 10% fee): the worst case per stream. Once it is
    /// insolvent, liquidating it with every slot cold (`vm.cool`) must cost under 10M gas.
    function test_C1_worstCaseAccountAtStreamCapIsLiquidatableUnder10MGas() public {
        address whale = address(0xC1C1);
        _deposit(whale, 1_000e6); // 1e21: two windows of 700 streams of 1e12/s need 1.2096e20
        uint96 rate = 1e12;
        uint256 target = 700;
        uint256 opened;
        bytes memory refusal;
        for (uint256 i; i < target; ++i) {
            address author = address(uint160(0xA0000000 + i));
            address owner = address(uint160(0xB0000000 + i));
            uint256 projectId = _claimProject(owner, 1000);
            (bool ok, bytes memory err) =
                _as(whale, address(sp), abi.encodeCall(IStreamPay.subscribe, (author, rate, projectId)));
            if (!ok) {
                refusal = err;
                break;
            }
            opened++;
        }
        emit log_named_uint("streams the contract let one account open", opened);
        // make it insolvent: its balance runs down to about zero
        vm.warp(block.timestamp + 1e21 / (opened * rate));
        assertTrue(sp.isLiquidatable(whale), "the account is liquidatable");

        vm.cool(address(sp));
        uint256 before = gasleft();
        vm.prank(dave);
        sp.liquidate(whale);
        uint256 used = before - gasleft();
        emit log_named_uint("gas of liquidate() at that count, every slot cold", used);
        emit log_named_uint("gas per stream", used / opened);
        assertLe(used, 10_000_000, "C-1: liquidating the account needs more than 10M gas");

        // the cap itself: the first stream past it is refused with StreamPayTooManyStreams(whale)
        (bool okCap, bytes memory cap) = address(sp).staticcall(abi.encodeWithSignature("maxStreams()"));
        assertTrue(okCap, "maxStreams()");
        assertEq(opened, abi.decode(cap, (uint256)), "streams opened == maxStreams()");
        assertEq(refusal, abi.encodeWithSelector(IStreamPay.StreamPayTooManyStreams.selector, whale));
        assertEq(sp.totalSupply(), token.balanceOf(address(sp)) * SCALE, "backing");
    }

    // =====================================================================================
    // H-1: revocable income is not collateral
    // =====================================================================================

    /// @dev Zero-capital cycle: a1 funds two windows of r and streams r to a2; a2 (no balance)
    /// tries to stream r back; a1 tries to withdraw everything and to stop its stream. However far
    /// each step gets, a keeper acting 60 s after an account becomes liquidatable (window: 1 day)
    /// must leave no negative balance, and every positive balance must stay backed by tokens.
    function test_H1_zeroCapitalCycleLeavesNoDebtBehindATimelyKeeper() public {
        (address a1,) = _newUser("cycle-a1");
        (address a2,) = _newUser("cycle-a2");
        uint96 r = 1e18; // one token a second
        _deposit(a1, 2 * r * W / SCALE);
        _subscribe(a1, a2, r, 0);
        (bool cycleOk, bytes memory cycleErr) = _as(a2, address(sp), abi.encodeCall(IStreamPay.subscribe, (a1, r, 0)));
        _as(a1, address(sp), abi.encodeCall(IStreamPay.withdraw, (sp.balanceOf(a1))));
        _as(a1, address(sp), abi.encodeCall(IStreamPay.unsubscribe, (a2)));

        address[3] memory accts = [a1, a2, dave];
        for (uint256 i; i < 2; ++i) {
            uint256 at = _firstLiquidatableAt(accts[i], 400 days);
            if (at == 0) continue;
            vm.warp(at + 60);
            vm.prank(dave);
            sp.liquidate(accts[i]);
        }
        address[] memory all = new address[](3);
        (all[0], all[1], all[2]) = (accts[0], accts[1], accts[2]);
        for (uint256 i; i < 3; ++i) {
            assertGe(sp.signedBalanceOf(all[i]), 0, "H-1: negative balance after a 60 s keeper latency");
        }
        assertGe(token.balanceOf(address(sp)) * SCALE, _positiveSum(all), "tokens held cover positive balances");
        // how v2 stops it: a2's income does not cover its own stream
        assertFalse(cycleOk, "a2 streamed with no balance");
        assertEq(
            cycleErr,
            abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, a2, 2 * uint256(r) * W, 0)
        );
    }

    /// @dev bob holds 100 USDC and re-streams to carol at the highest rate the contract lets him
    /// (alice streams to him). alice's multicall([unsubscribe(bob), liquidate(bob)]) must not
    /// seize bob's balance: a payer's own action never makes its payee liquidatable.
    function test_H1_payerCannotUnsubscribeAndLiquidateItsPayeeInOneCall() public {
        _deposit(alice, 100_000e6);
        _subscribe(alice, bob, 1e15, 0);
        _deposit(bob, 100e6);
        uint96 r2 = _maxAcceptedRate(bob, carol, 1e15 + uint256(100e18) / W);
        assertGt(r2, 0, "bob can stream");
        _subscribe(bob, carol, r2, 0);
        int256 bobBefore = sp.signedBalanceOf(bob);
        int256 aliceBefore = sp.signedBalanceOf(alice);

        bytes[] memory calls = new bytes[](2);
        calls[0] = abi.encodeCall(IStreamPay.unsubscribe, (bob));
        calls[1] = abi.encodeCall(IStreamPay.liquidate, (bob));
        (bool ok, bytes memory err) = _as(alice, address(sp), abi.encodeCall(IStreamPay.multicall, (calls)));

        assertEq(sp.signedBalanceOf(bob), bobBefore, "H-1: bob's balance was seized by his payer");
        assertEq(sp.signedBalanceOf(alice), aliceBefore, "H-1: alice gained from liquidating her payee");
        assertFalse(ok, "multicall([unsubscribe, liquidate]) succeeded");
        assertEq(err, abi.encodeWithSelector(IStreamPay.StreamPayNotLiquidatable.selector, bob));
        // unsubscribing alone is always possible, and still leaves bob solvent
        _unsubscribe(alice, bob);
        assertFalse(sp.isLiquidatable(bob), "bob liquidatable the second his payer left");
    }

    /// @dev A payee re-streams at the highest rate the contract lets it; its payer leaves at any
    /// time; a keeper liquidates it `latency` seconds after it becomes liquidatable, anywhere inside
    /// the window (0 .. W - 1). Its balance must never have gone negative.
    function testFuzz_H1_keeperLatencyAnywhereInWindowLeavesNoNegativeBalance(
        uint256 incomeRate,
        uint256 depositTokens,
        uint256 payerLeavesAfter,
        uint256 latency
    ) public {
        incomeRate = bound(incomeRate, 1e9, 1e18);
        depositTokens = bound(depositTokens, 1, 1_000_000e6);
        payerLeavesAfter = bound(payerLeavesAfter, 0, 30 days);
        latency = bound(latency, 0, W - 1);
        _deposit(alice, INITIAL_TOKENS * 10);
        _subscribe(alice, bob, uint96(incomeRate), 0);
        _deposit(bob, depositTokens);
        uint96 r2 = _maxAcceptedRate(bob, carol, incomeRate + depositTokens * SCALE / W + 1);
        vm.assume(r2 > 0);
        _subscribe(bob, carol, r2, 0);
        // the keeper watches from now on; the payer leaves at `leaveAt`, whenever that falls
        uint256 leaveAt = block.timestamp + payerLeavesAfter;
        uint256 at = _firstLiquidatableAt(bob, payerLeavesAfter);
        if (at == 0) {
            vm.warp(leaveAt);
            _unsubscribe(alice, bob);
            at = _firstLiquidatableAt(bob, 100 * 365 days);
            if (at == 0) return;
        } else if (at + latency > leaveAt) {
            vm.warp(leaveAt);
            _unsubscribe(alice, bob);
        }
        vm.warp(at + latency);
        int256 live = sp.signedBalanceOf(bob);
        vm.prank(dave);
        sp.liquidate(bob);
        assertGe(live, 0, "H-1: the payee's balance went negative before a keeper inside the window");
        assertGe(sp.signedBalanceOf(bob), 0, "no debt left behind");
    }

    // =====================================================================================
    // H-2: Permit2 amounts above uint160
    // =====================================================================================

    /// @dev 18-decimal token: deposit(2^160, isPermit2) would credit 2^160 while Permit2 moves
    /// uint160(2^160) = 0 tokens. Every credited unit must be backed; the largest Permit2 amount
    /// (2^160 - 1) still works.
    function test_H2_permit2DepositAboveUint160IsRefused_18Decimals() public {
        MockToken18 t18 = new MockToken18("Dai", "DAI");
        StreamPay sp18 = new StreamPay(IERC20Metadata(address(t18)), IPermit2(address(permit2)), W);
        (address attacker,) = _newUser("h2-attacker");
        vm.startPrank(attacker);
        t18.approve(address(permit2), type(uint256).max);
        permit2.approve(address(t18), address(sp18), type(uint160).max, uint48(block.timestamp + 1 days));
        (bool ok, bytes memory err) = address(sp18).call(abi.encodeCall(IStreamPay.deposit, (2 ** 160, true)));
        vm.stopPrank();

        assertEq(sp18.totalSupply(), t18.balanceOf(address(sp18)), "H-2: balance credited without tokens");
        assertEq(sp18.balanceOf(attacker), 0, "H-2: attacker credited");
        assertFalse(ok, "deposit(2^160, Permit2) accepted");
        assertEq(err, abi.encodeWithSelector(IStreamPay.StreamPayAmountTooLarge.selector, uint256(2 ** 160)));

        // the boundary: 2^160 - 1 through Permit2 moves exactly that many tokens
        t18.mint(attacker, type(uint160).max);
        vm.prank(attacker);
        sp18.deposit(type(uint160).max, true);
        assertEq(sp18.balanceOf(attacker), type(uint160).max);
        assertEq(t18.balanceOf(address(sp18)), type(uint160).max);
        assertEq(sp18.totalSupply(), type(uint160).max);
    }

    // =====================================================================================
    // M-1: a signature binds its signer
    // =====================================================================================

    /// @dev dave's key signs a payment as his EOA, in every digest format (v1 and v2). Whatever the
    /// deployment accepts for the EOA, the same signature must never run as dave's ERC-1271 wallet.
    function test_M1_eoaSignatureDoesNotReplayAsWalletOfSameKey() public {
        ERC1271Wallet wallet = new ERC1271Wallet(dave);
        _deposit(dave, 100e6);
        vm.prank(alice);
        sp.depositFor(100e6, address(wallet), false);
        _replayAcross(dave, address(wallet));
    }

    /// @dev The other direction: signed for the wallet, replayed as the EOA.
    function test_M1_walletSignatureDoesNotReplayAsEoaOfSameKey() public {
        ERC1271Wallet wallet = new ERC1271Wallet(dave);
        _deposit(dave, 100e6);
        vm.prank(alice);
        sp.depositFor(100e6, address(wallet), false);
        _replayAcross(address(wallet), dave);
    }

    function _replayAcross(address signedFor, address replayedAs) internal {
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 20e18));
        uint256 traits = _traits(2, 777); // the same unique nonce is fresh for both accounts
        bytes32[2] memory digests =
            [_digestV1(address(sp), traits, data), _digestV2(address(sp), signedFor, traits, data)];
        uint256 ranAsSigned;
        uint256 ranAsReplay;
        for (uint256 i; i < 2; ++i) {
            bytes memory sig = _sig(DAVE_PK, digests[i]);
            (bool ok,) = _as(
                relayer,
                address(sp),
                abi.encodeCall(IStreamPay.bySig, (signedFor, IStreamPay.SignedCall(traits, data), sig))
            );
            if (ok) ranAsSigned++;
            (ok,) = _as(
                relayer,
                address(sp),
                abi.encodeCall(IStreamPay.bySig, (replayedAs, IStreamPay.SignedCall(traits, data), sig))
            );
            if (ok) ranAsReplay++;
        }
        assertEq(ranAsSigned, 1, "the signature runs for the account it was made for");
        assertEq(ranAsReplay, 0, "M-1: the signature was replayed as another account of the same key");
        assertEq(sp.balanceOf(bob), 20e18, "bob paid exactly once");
        assertEq(sp.balanceOf(replayedAs), 100e18, "the other account paid nothing");
    }

    // =====================================================================================
    // M-2: no signer identity (no entry point at all) inside token callbacks
    // =====================================================================================

    /// @dev alice signs withdrawTo(merchant, 20) on a deployment of a hook token. The merchant's
    /// hook calls pay(merchant, alice's whole balance) while the transfer is in flight: it must be
    /// refused (StreamPayReentrantCall), alice keeps 80, the withdrawal itself goes through.
    function test_M2_tokenHookCannotActAsSignerDuringSignedWithdrawTo() public {
        HookToken ht = new HookToken();
        sp = new StreamPay(IERC20Metadata(address(ht)), IPermit2(address(permit2)), W);
        HookMerchant merchant = new HookMerchant(address(sp), alice, ht);
        ht.mint(alice, 100e18);
        vm.startPrank(alice);
        ht.approve(address(sp), type(uint256).max);
        sp.deposit(100e18, false);
        vm.stopPrank();

        bytes memory call = _signed(
            address(sp),
            ALICE_PK,
            alice,
            _traits(0, 0),
            abi.encodeCall(IStreamPay.withdrawTo, (address(merchant), 20e18))
        );
        (bool ok, bytes memory err) = _as(relayer, address(sp), call);
        assertTrue(ok, string.concat("signed withdrawTo failed: ", vm.toString(err)));

        assertEq(merchant.attempts(), 1, "the hook ran");
        assertEq(sp.balanceOf(alice), 80e18, "M-2: alice lost more than she signed for");
        assertEq(sp.balanceOf(address(merchant)), 0, "M-2: the merchant was paid from alice's balance");
        assertEq(ht.balanceOf(address(merchant)), 20e18, "the withdrawal arrived");
        assertFalse(merchant.lastOk(), "the reentrant call succeeded");
        assertEq(merchant.lastError(), abi.encodeWithSelector(ERR_REENTRANT, address(merchant)));
        assertEq(sp.totalSupply(), ht.balanceOf(address(sp)), "backing");
    }

    // =====================================================================================
    // L-1: selector and unique nonces can be cancelled
    // =====================================================================================

    /// @dev alice signs two payments, one with a unique nonce and one with a selector nonce, then
    /// cancels both nonces herself. Submitted later, both must fail with StreamPayWrongNonce.
    function test_L1_selectorAndUniqueNonceCallsCanBeCancelled() public {
        _deposit(alice, 100e6);
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 1e18));
        bytes memory byUnique = _signed(address(sp), ALICE_PK, alice, _traits(2, 4242), data);
        bytes memory bySelector = _signed(address(sp), ALICE_PK, alice, _traits(1, 0), data);

        vm.recordLogs();
        (bool c1,) = _as(alice, address(sp), abi.encodeWithSignature("useBySigUniqueNonce(uint256)", 4242));
        (bool c2,) = _as(
            alice,
            address(sp),
            abi.encodeWithSignature("useBySigSelectorNonce(bytes4,uint32)", IStreamPay.pay.selector, 1)
        );
        uint256 nonceEvents = _countNonceUsed(alice);

        vm.warp(block.timestamp + 20 days);
        (bool ran1, bytes memory e1) = _as(relayer, address(sp), byUnique);
        (bool ran2, bytes memory e2) = _as(relayer, address(sp), bySelector);
        assertFalse(ran1 || ran2, "L-1: a signed call its signer cancelled was executed");
        assertEq(sp.balanceOf(bob), 0, "bob was paid");
        assertTrue(c1 && c2, "both cancellations succeed");
        assertEq(nonceEvents, 2, "each cancellation emits NonceUsed");
        assertEq(e1, abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(2), uint256(4242)));
        assertEq(e2, abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(1), uint256(0)));
        assertTrue(sp.bySigUniqueNonces(alice, 4242), "unique nonce marked used");
        assertEq(sp.bySigSelectorNonces(alice, IStreamPay.pay.selector), 1, "selector nonce advanced");
    }

    function _countNonceUsed(address signer) internal returns (uint256 n) {
        bytes32 topic = keccak256("NonceUsed(address,uint8,bytes4,uint256)");
        Vm.Log[] memory logs = vm.getRecordedLogs();
        for (uint256 i; i < logs.length; ++i) {
            if (
                logs[i].emitter == address(sp) && logs[i].topics[0] == topic
                    && logs[i].topics[1] == bytes32(uint256(uint160(signer)))
            ) n++;
        }
    }

    // =====================================================================================
    // L-2: EIP-7702 delegated EOAs can sign
    // =====================================================================================

    /// @dev alice's EOA carries an EIP-7702 delegation designator (0xef0100 ‖ delegate) to a
    /// contract without ERC-1271. Her own ECDSA signature must still work.
    function test_L2_eip7702DelegatedEoaCanUseBySig() public {
        _deposit(alice, 10e6);
        address delegate = address(new MockToken18("not a wallet", "X"));
        vm.etch(alice, abi.encodePacked(hex"ef0100", delegate));
        assertEq(alice.code.length, 23, "alice has a delegation designator");
        bytes memory call =
            _signed(address(sp), ALICE_PK, alice, _traits(0, 0), abi.encodeCall(IStreamPay.pay, (bob, 1e18)));
        (bool ok, bytes memory err) = _as(relayer, address(sp), call);
        assertTrue(ok, string.concat("L-2: a 7702-delegated EOA's signature was refused: ", vm.toString(err)));
        assertEq(sp.balanceOf(bob), 1e18);
    }

    // =====================================================================================
    // informational: subscriber bounds the fee; two-step project ownership
    // =====================================================================================

    /// @dev alice accepts at most 5% when she signs; the owner raises the fee to 20% just before
    /// her call lands: it must revert StreamPayProjectFeeAboveMax, and pass at 5%.
    function test_I1_subscriberBoundsTheProjectFeeItAccepts() public {
        _deposit(alice, 100e6);
        uint256 projectId = _claimProject(carol, 500);
        bytes memory data = abi.encodeWithSignature(
            "subscribeWithMaxFee(address,uint96,uint256,uint16)", bob, uint96(1e12), projectId, uint16(500)
        );
        bytes memory call = _signed(address(sp), ALICE_PK, alice, _traits(0, 0), data);
        vm.prank(carol);
        sp.setDefaultSettings(IStreamPay.Settings(2000), projectId); // front-runs the relayer
        (bool ok, bytes memory err) = _as(relayer, address(sp), call);
        (bool active,) = sp.subscriptions(alice, bob);
        assertFalse(active, "I-1: the stream opened under a fee its subscriber did not accept");
        assertFalse(ok);
        assertEq(err, abi.encodeWithSelector(ERR_FEE_ABOVE_MAX, projectId, uint16(2000), uint16(500)));

        vm.prank(carol);
        sp.setDefaultSettings(IStreamPay.Settings(500), projectId);
        (ok, err) = _as(relayer, address(sp), call);
        assertTrue(ok, vm.toString(err));
        (, uint256 enc) = sp.subscriptions(alice, bob);
        assertEq(enc, _encodeRates(1e12 - _feeOf(1e12, 500), 1e12, projectId));
    }

    /// @dev carol hands her project (10% fee, one live stream) to dave in two steps; the fee stream
    /// moves with it, and stopping the stream later takes it from dave (no underflow, no leftover).
    function test_I3_projectOwnershipTransfersInTwoStepsWithItsFeeStream() public {
        uint256 projectId = _claimProject(carol, 1000);
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1e13, projectId);
        (, uint256 carolIncome,,) = sp.accountInfo(carol);
        assertEq(carolIncome, 1e12);

        (bool ok,) = _as(
            carol, address(sp), abi.encodeWithSignature("transferProjectOwnership(uint256,address)", projectId, dave)
        );
        assertTrue(ok, "I-3: transferProjectOwnership");
        assertEq(sp.projectOwner(projectId), carol, "not before acceptance");
        (bool okBob, bytes memory errBob) =
            _as(bob, address(sp), abi.encodeWithSignature("acceptProjectOwnership(uint256)", projectId));
        assertFalse(okBob, "only the pending owner accepts");
        assertEq(errBob, abi.encodeWithSelector(ERR_NOT_PENDING_OWNER, projectId, bob));
        vm.warp(block.timestamp + 100);
        (ok,) = _as(dave, address(sp), abi.encodeWithSignature("acceptProjectOwnership(uint256)", projectId));
        assertTrue(ok, "acceptProjectOwnership");
        assertEq(sp.projectOwner(projectId), dave);
        (, carolIncome,,) = sp.accountInfo(carol);
        (, uint256 daveIncome,,) = sp.accountInfo(dave);
        assertEq(carolIncome, 0, "the fee stream left carol");
        assertEq(daveIncome, 1e12, "and reached dave");
        assertEq(sp.balanceOf(carol), 100 * 1e12, "carol keeps what accrued before");

        vm.warp(block.timestamp + 50);
        _unsubscribe(alice, bob);
        (, daveIncome,,) = sp.accountInfo(dave);
        assertEq(daveIncome, 0);
        assertEq(sp.balanceOf(dave), 50 * 1e12, "dave earned 50 s of fee");
        vm.prank(dave);
        sp.setDefaultSettings(IStreamPay.Settings(0), projectId); // dave now runs the project
    }
}
