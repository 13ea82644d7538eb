// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {IStreamPay} from "../src/IStreamPay.sol";
import {Base} from "./utils/Base.sol";

/// @title FuzzTest
/// @notice Property tests with bounded inputs. Every expectation is the closed form computed here
/// from the inputs (balance = deposit + (income - outgoing) * elapsed, fee = rate * bps / 10_000).
/// Solvency rule under test: an account's own operations must leave its live balance covering
/// OPERATING_WINDOWS (2) liquidation windows of net outflow; it is liquidatable below ONE window.
contract FuzzTest is Base {
    uint256 internal constant MAX_TOKENS = 1e18; // 1e12 USDC: far beyond any real deposit
    uint256 internal constant MAX_ELAPSED = 10 * 365 days;

    /// @dev Bounds a deposit in token units and a rate the deposit can sustain for the two windows a
    /// subscribe must leave covered.
    function _boundDepositAndRate(uint256 tokens, uint256 rate) internal pure returns (uint256, uint96) {
        tokens = bound(tokens, 1, MAX_TOKENS);
        uint256 maxRate = tokens * SCALE / (OPERATING_WINDOWS * LIQUIDATION_WINDOW); // >= 5_787_037 for one unit
        return (tokens, uint96(bound(rate, 1, maxRate)));
    }

    /// @dev As `_boundDepositAndRate`, with a rate high enough that the account becomes
    /// liquidatable within MAX_ELAPSED (timestamps stay realistic).
    function _boundDepositAndFastRate(uint256 tokens, uint256 rate) internal pure returns (uint256, uint96) {
        tokens = bound(tokens, 1, MAX_TOKENS);
        uint256 d = tokens * SCALE;
        uint256 minRate = d / (LIQUIDATION_WINDOW + MAX_ELAPSED) + 1;
        return (tokens, uint96(bound(rate, minRate, d / (OPERATING_WINDOWS * LIQUIDATION_WINDOW))));
    }

    // ---------------------------------------------------------------- deposits and withdrawals

    function testFuzz_deposit_creditsAmountTimes1e12(uint256 tokens) public {
        tokens = bound(tokens, 1, MAX_TOKENS);
        uint256 credited = _deposit(alice, tokens);
        assertEq(sp.balanceOf(alice), tokens * 1e12);
        assertEq(credited, tokens * 1e12);
        assertEq(sp.totalSupply(), tokens * 1e12);
        assertEq(token.balanceOf(address(sp)), tokens);
    }

    function testFuzz_depositThenWithdraw_roundTripsTokenAmount(uint256 tokens, bool viaPermit2) public {
        tokens = bound(tokens, 1, MAX_TOKENS);
        (address eve,) = _newUser("eve");
        token.mint(eve, tokens);
        vm.startPrank(eve);
        if (viaPermit2) {
            token.approve(address(permit2), type(uint256).max);
            permit2.approve(address(token), address(sp), uint160(tokens), uint48(block.timestamp));
        } else {
            token.approve(address(sp), tokens);
        }
        sp.deposit(tokens, viaPermit2);
        assertEq(token.balanceOf(eve), 0);
        sp.withdraw(tokens * 1e12);
        vm.stopPrank();
        assertEq(token.balanceOf(eve), tokens);
        assertEq(token.balanceOf(address(sp)), 0);
        assertEq(sp.balanceOf(eve), 0);
        assertEq(sp.totalSupply(), 0);
    }

    function testFuzz_withdraw_burnsOnlyWholeTokenUnits(uint256 received, uint256 requested) public {
        _deposit(bob, 1_000e6);
        received = bound(received, 1e12, 1_000e18);
        requested = bound(requested, 1e12, received);
        vm.prank(bob);
        sp.pay(alice, received);
        uint256 tokensBefore = token.balanceOf(alice);

        vm.prank(alice);
        sp.withdraw(requested);
        uint256 units = requested / 1e12;
        assertEq(token.balanceOf(alice), tokensBefore + units);
        assertEq(sp.balanceOf(alice), received - units * 1e12);
        assertEq(sp.totalSupply(), 1_000e18 - units * 1e12);
        assertEq(token.balanceOf(address(sp)), 1_000e6 - units);
    }

    function testFuzz_withdraw_revertsBeyondBalance(uint256 tokens, uint256 excess) public {
        tokens = bound(tokens, 1, MAX_TOKENS);
        excess = bound(excess, 1, MAX_TOKENS);
        _deposit(alice, tokens);
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, excess * 1e12, uint256(0)
            )
        );
        vm.prank(alice);
        sp.withdraw((tokens + excess) * 1e12);
    }

    function testFuzz_pay_conservesTheSumOfBalances(uint256 tokens, uint256 amount) public {
        tokens = bound(tokens, 1, MAX_TOKENS);
        amount = bound(amount, 1, tokens * 1e12);
        _deposit(alice, tokens);
        vm.prank(alice);
        sp.pay(bob, amount);
        assertEq(sp.balanceOf(alice), tokens * 1e12 - amount);
        assertEq(sp.balanceOf(bob), amount);
        assertEq(sp.balanceOf(alice) + sp.balanceOf(bob), sp.totalSupply());
    }

    // ---------------------------------------------------------------- streams

    function testFuzz_liveBalances_matchClosedFormAfterRandomTime(uint256 tokens, uint256 rate_, uint256 elapsed)
        public
    {
        (uint256 tokens_, uint96 rate) = _boundDepositAndRate(tokens, rate_);
        elapsed = bound(elapsed, 0, MAX_ELAPSED);
        _deposit(alice, tokens_);
        _subscribe(alice, bob, rate, 0);
        vm.warp(START + elapsed);

        int256 expected = int256(tokens_ * 1e12) - int256(uint256(rate) * elapsed);
        assertEq(sp.signedBalanceOf(alice), expected);
        assertEq(sp.balanceOf(alice), expected > 0 ? uint256(expected) : 0);
        assertEq(sp.balanceOf(bob), uint256(rate) * elapsed);
        assertEq(sp.signedBalanceOf(alice) + sp.signedBalanceOf(bob), int256(sp.totalSupply()));
        assertEq(sp.isLiquidatable(alice), expected < int256(uint256(rate) * LIQUIDATION_WINDOW));
    }

    function testFuzz_liveBalances_matchClosedFormAcrossRateChange(
        uint256 tokens,
        uint256 r1_,
        uint256 r2_,
        uint256 t1,
        uint256 t2
    ) public {
        (uint256 tokens_, uint96 r1) = _boundDepositAndRate(tokens, r1_);
        uint256 d = tokens_ * 1e12;
        // not liquidatable up to t1 so the re-subscribe is the account's own choice
        uint256 lastSolvent = (d - uint256(r1) * LIQUIDATION_WINDOW) / r1;
        t1 = bound(t1, 0, lastSolvent < MAX_ELAPSED ? lastSolvent : MAX_ELAPSED);
        uint256 live1 = d - uint256(r1) * t1;
        // the new rate must leave two windows covered
        uint256 maxR2 = live1 / (OPERATING_WINDOWS * LIQUIDATION_WINDOW);
        vm.assume(maxR2 >= 1);
        uint96 r2 = uint96(bound(r2_, 1, maxR2));
        t2 = bound(t2, 0, MAX_ELAPSED);

        _deposit(alice, tokens_);
        _subscribe(alice, bob, r1, 0);
        vm.warp(START + t1);
        _subscribe(alice, bob, r2, 0);
        vm.warp(START + t1 + t2);

        int256 expected = int256(d) - int256(uint256(r1) * t1) - int256(uint256(r2) * t2);
        assertEq(sp.signedBalanceOf(alice), expected);
        assertEq(sp.balanceOf(bob), uint256(r1) * t1 + uint256(r2) * t2);
        (, uint256 income,,) = sp.accountInfo(bob);
        assertEq(income, r2);
    }

    function testFuzz_liveBalances_manyStreams(uint256 seed, uint8 n_, uint256 elapsed) public {
        uint256 n = bound(n_, 1, 8);
        elapsed = bound(elapsed, 0, MAX_ELAPSED);
        _deposit(alice, 1_000_000e6);
        uint256 total;
        uint256[] memory rates = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            // each rate up to 1e18 / 86400: the total needs at most 2 * 8e18 of the 1e24 deposit
            rates[i] = bound(uint256(keccak256(abi.encode(seed, i))), 1, 1e18 / LIQUIDATION_WINDOW);
            total += rates[i];
            _subscribe(alice, vm.addr(100 + i), uint96(rates[i]), 0);
        }
        vm.warp(START + elapsed);
        assertEq(sp.signedBalanceOf(alice), int256(1_000_000e18) - int256(total * elapsed));
        for (uint256 i; i < n; ++i) {
            assertEq(sp.balanceOf(vm.addr(100 + i)), rates[i] * elapsed);
        }
        (,, uint256 outgoing,) = sp.accountInfo(alice);
        assertEq(outgoing, total);
    }

    function testFuzz_unsubscribe_freezesBothBalances(uint256 tokens, uint256 rate_, uint256 t1, uint256 t2) public {
        (uint256 tokens_, uint96 rate) = _boundDepositAndRate(tokens, rate_);
        t1 = bound(t1, 0, MAX_ELAPSED);
        t2 = bound(t2, 0, MAX_ELAPSED);
        _deposit(alice, tokens_);
        _subscribe(alice, bob, rate, 0);
        vm.warp(START + t1);
        _unsubscribe(alice, bob);
        vm.warp(START + t1 + t2);
        assertEq(sp.signedBalanceOf(alice), int256(tokens_ * 1e12) - int256(uint256(rate) * t1));
        assertEq(sp.balanceOf(bob), uint256(rate) * t1);
    }

    function testFuzz_subscribe_revertsIffBalanceCannotCoverTwoWindows(uint256 tokens, uint96 rate) public {
        tokens = bound(tokens, 1, MAX_TOKENS);
        rate = uint96(bound(rate, 1, type(uint96).max));
        _deposit(alice, tokens);
        uint256 d = tokens * 1e12;
        uint256 required = uint256(rate) * 2 * LIQUIDATION_WINDOW;
        if (required > d) {
            vm.expectRevert(
                abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, required - d, d)
            );
        }
        _subscribe(alice, bob, rate, 0);
        (bool active,) = sp.subscriptions(alice, bob);
        assertEq(active, required <= d);
        if (!active) return;
        // every accepted stream runs a full window before it can be liquidated
        assertFalse(sp.isLiquidatable(alice));
        vm.warp(START + LIQUIDATION_WINDOW);
        assertEq(sp.signedBalanceOf(alice), int256(d - uint256(rate) * LIQUIDATION_WINDOW));
        assertFalse(sp.isLiquidatable(alice));
    }

    /// @dev The highest rate a deposit allows runs at least one full window, and the account
    /// becomes liquidatable exactly when its balance drops below one window of outflow.
    function testFuzz_subscribe_atHighestRateIsLiquidatableOnlyAfterOneWindow(uint256 tokens) public {
        tokens = bound(tokens, 1, MAX_TOKENS);
        uint256 d = tokens * 1e12;
        uint256 rate = d / (2 * LIQUIDATION_WINDOW);
        _deposit(alice, tokens);
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, (rate + 1) * 2 * LIQUIDATION_WINDOW - d, d
            )
        );
        _subscribe(alice, bob, uint96(rate + 1), 0);
        _subscribe(alice, bob, uint96(rate), 0);
        // first second t with d - rate * t < rate * window
        uint256 firstLiquidatable = (d - rate * LIQUIDATION_WINDOW) / rate + 1;
        assertGt(firstLiquidatable, LIQUIDATION_WINDOW);
        vm.warp(START + 1);
        assertFalse(sp.isLiquidatable(alice));
        vm.warp(START + LIQUIDATION_WINDOW);
        assertFalse(sp.isLiquidatable(alice));
        vm.warp(START + firstLiquidatable - 1);
        assertFalse(sp.isLiquidatable(alice));
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNotLiquidatable.selector, alice));
        vm.prank(dave);
        sp.liquidate(alice);
        vm.warp(START + firstLiquidatable);
        assertTrue(sp.isLiquidatable(alice));
        uint256 reward = d - rate * firstLiquidatable;
        vm.expectEmit(true, true, true, true, address(sp));
        emit Liquidated(alice, dave, reward, 1);
        vm.prank(dave);
        sp.liquidate(alice);
        assertEq(sp.balanceOf(dave), reward);
    }

    /// @dev A payment from a streaming account reverts iff it leaves less than two windows of
    /// cover (exact error), and the largest allowed payment leaves the account liquidatable exactly
    /// one window and one second later.
    function testFuzz_pay_revertsIffItLeavesLessThanTwoWindows(
        uint256 tokens,
        uint256 rate_,
        uint256 elapsed,
        uint256 amount
    ) public {
        (uint256 tokens_, uint96 rate) = _boundDepositAndRate(tokens, rate_);
        uint256 d = tokens_ * 1e12;
        uint256 required = uint256(rate) * 2 * LIQUIDATION_WINDOW;
        // any time (realistic) at which alice still covers two windows
        uint256 lastCovered = (d - required) / rate;
        elapsed = bound(elapsed, 0, lastCovered < MAX_ELAPSED ? lastCovered : MAX_ELAPSED);
        uint256 live = d - uint256(rate) * elapsed;
        uint256 spendable = live - required;
        amount = bound(amount, 1, live + 1e18);
        _deposit(alice, tokens_);
        _subscribe(alice, bob, rate, 0);
        vm.warp(START + elapsed);

        if (amount > spendable) {
            uint256 left = live > amount ? live - amount : 0;
            vm.expectRevert(
                abi.encodeWithSelector(
                    IStreamPay.StreamPayInsufficientBalance.selector, alice, required + amount - live, left
                )
            );
            vm.prank(alice);
            sp.pay(carol, amount);
            amount = spendable;
            if (amount == 0) return;
        }
        vm.prank(alice);
        sp.pay(carol, amount);
        assertEq(sp.signedBalanceOf(alice), int256(live - amount));
        assertEq(sp.balanceOf(carol), amount);
        assertFalse(sp.isLiquidatable(alice));
        if (amount != spendable) return;
        // exactly two windows left
        vm.warp(START + elapsed + LIQUIDATION_WINDOW);
        assertFalse(sp.isLiquidatable(alice));
        vm.warp(START + elapsed + LIQUIDATION_WINDOW + 1);
        assertTrue(sp.isLiquidatable(alice));
    }

    // ---------------------------------------------------------------- fees

    function testFuzz_fee_incomePlusFeeEqualsOutgoing(uint256 rate_, uint256 fee_, uint256 elapsed) public {
        uint16 fee = uint16(bound(fee_, 0, MAX_FEE));
        uint256 tokens = MAX_TOKENS;
        uint96 rate = uint96(bound(rate_, 1, tokens * SCALE / (OPERATING_WINDOWS * LIQUIDATION_WINDOW)));
        elapsed = bound(elapsed, 0, MAX_ELAPSED);
        uint256 pid = _claimProject(carol, fee);
        _deposit(alice, tokens);
        _subscribe(alice, bob, rate, pid);

        uint256 feeRate = uint256(rate) * fee / 10_000;
        uint256 incomeRate = uint256(rate) - feeRate;
        (, uint256 enc) = sp.subscriptions(alice, bob);
        assertEq(enc, incomeRate + (uint256(rate) << 96) + (pid << 192));
        (, uint256 authorIn,,) = sp.accountInfo(bob);
        (, uint256 ownerIn,,) = sp.accountInfo(carol);
        (,, uint256 outgoing,) = sp.accountInfo(alice);
        assertEq(authorIn, incomeRate);
        assertEq(ownerIn, feeRate);
        assertEq(authorIn + ownerIn, outgoing, "income + fee == outgoing");
        assertLe(ownerIn * 10_000, outgoing * MAX_FEE, "fee <= 20%");

        vm.warp(START + elapsed);
        assertEq(sp.balanceOf(bob), incomeRate * elapsed);
        assertEq(sp.balanceOf(carol), feeRate * elapsed);
        assertEq(
            sp.signedBalanceOf(alice) + sp.signedBalanceOf(bob) + sp.signedBalanceOf(carol), int256(sp.totalSupply())
        );
    }

    function testFuzz_fee_userSettingOverridesDefault(uint256 defaultFee_, uint256 userFee_, uint256 rate_) public {
        uint16 defaultFee = uint16(bound(defaultFee_, 0, MAX_FEE));
        uint16 userFee = uint16(bound(userFee_, 0, MAX_FEE));
        uint96 rate = uint96(bound(rate_, 1, 1e18));
        uint256 pid = _claimProject(carol, defaultFee);
        vm.prank(carol);
        sp.setSettingsForUser(bob, IStreamPay.Settings(userFee), pid);
        assertEq(uint256(sp.projectFeeFor(pid, bob)), userFee);
        assertEq(uint256(sp.projectFeeFor(pid, dave)), defaultFee);

        _deposit(alice, 1_000_000e6);
        _subscribe(alice, bob, rate, pid);
        _subscribe(alice, dave, rate, pid);
        (, uint256 encBob) = sp.subscriptions(alice, bob);
        (, uint256 encDave) = sp.subscriptions(alice, dave);
        assertEq(encBob & type(uint96).max, uint256(rate) - uint256(rate) * userFee / 10_000);
        assertEq(encDave & type(uint96).max, uint256(rate) - uint256(rate) * defaultFee / 10_000);
    }

    function testFuzz_fee_changeDoesNotTouchExistingStreams(uint256 fee1_, uint256 fee2_, uint256 rate_) public {
        uint16 fee1 = uint16(bound(fee1_, 0, MAX_FEE));
        uint16 fee2 = uint16(bound(fee2_, 0, MAX_FEE));
        uint96 rate = uint96(bound(rate_, 1, 1e18));
        uint256 pid = _claimProject(carol, fee1);
        _deposit(alice, 1_000_000e6);
        _subscribe(alice, bob, rate, pid);
        vm.prank(carol);
        sp.setDefaultSettings(IStreamPay.Settings(fee2), pid);
        (, uint256 enc) = sp.subscriptions(alice, bob);
        assertEq(enc, _encodeRates(uint256(rate) - uint256(rate) * fee1 / 10_000, rate, pid));
        (, uint256 ownerIn,,) = sp.accountInfo(carol);
        assertEq(ownerIn, uint256(rate) * fee1 / 10_000);
        // unsubscribing removes exactly what was added, whatever the fee is now
        _unsubscribe(alice, bob);
        (, ownerIn,,) = sp.accountInfo(carol);
        (, uint256 authorIn,,) = sp.accountInfo(bob);
        assertEq(ownerIn, 0);
        assertEq(authorIn, 0);
    }

    function testFuzz_fee_above20PercentReverts(uint256 fee_) public {
        uint16 fee = uint16(bound(fee_, MAX_FEE + 1, type(uint16).max));
        uint256 pid = _claimProject(carol, 0);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayFeeTooHigh.selector, fee, MAX_FEE));
        vm.prank(carol);
        sp.setDefaultSettings(IStreamPay.Settings(fee), pid);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayFeeTooHigh.selector, fee, MAX_FEE));
        vm.prank(carol);
        sp.setSettingsForUser(bob, IStreamPay.Settings(fee), pid);
    }

    // ---------------------------------------------------------------- liquidation

    function testFuzz_liquidate_rewardsRemainingBalanceAndStopsStream(uint256 tokens, uint256 rate_, uint256 elapsed)
        public
    {
        (uint256 tokens_, uint96 rate) = _boundDepositAndFastRate(tokens, rate_);
        uint256 d = tokens_ * 1e12;
        // first second at which d - rate * t < rate * window
        uint256 firstLiquidatable = (d - uint256(rate) * LIQUIDATION_WINDOW) / rate + 1;
        // the subscribe left two windows covered, so that is more than one window after it
        assertGt(firstLiquidatable, LIQUIDATION_WINDOW);
        elapsed = bound(elapsed, firstLiquidatable, firstLiquidatable + MAX_ELAPSED);
        _deposit(alice, tokens_);
        _subscribe(alice, bob, rate, 0);

        vm.warp(START + firstLiquidatable - 1);
        assertFalse(sp.isLiquidatable(alice));
        vm.warp(START + elapsed);
        assertTrue(sp.isLiquidatable(alice));

        int256 live = int256(d) - int256(uint256(rate) * elapsed);
        uint256 reward = live > 0 ? uint256(live) : 0;
        vm.expectEmit(true, true, true, true, address(sp));
        emit Liquidated(alice, dave, reward, 1);
        vm.prank(dave);
        sp.liquidate(alice);

        assertEq(sp.balanceOf(dave), reward);
        assertEq(sp.signedBalanceOf(alice), live > 0 ? int256(0) : live);
        assertEq(sp.balanceOf(bob), uint256(rate) * elapsed);
        vm.warp(START + elapsed + 1 days);
        assertEq(sp.balanceOf(bob), uint256(rate) * elapsed, "stopped");
        assertEq(
            sp.signedBalanceOf(alice) + sp.signedBalanceOf(bob) + sp.signedBalanceOf(dave), int256(sp.totalSupply())
        );
    }

    function testFuzz_liquidate_revertsWhileSolvent(uint256 tokens, uint256 rate_, uint256 elapsed) public {
        (uint256 tokens_, uint96 rate) = _boundDepositAndFastRate(tokens, rate_);
        uint256 lastSolvent = (tokens_ * 1e12 - uint256(rate) * LIQUIDATION_WINDOW) / rate;
        elapsed = bound(elapsed, 0, lastSolvent);
        _deposit(alice, tokens_);
        _subscribe(alice, bob, rate, 0);
        vm.warp(START + elapsed);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNotLiquidatable.selector, alice));
        vm.prank(dave);
        sp.liquidate(alice);
    }
}
