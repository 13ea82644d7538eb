// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {IStreamPay} from "../src/IStreamPay.sol";
import {Base} from "./utils/Base.sol";
import {Vm} from "./utils/Vm.sol";

/// @dev A contract that reverts on every call and refuses ether: an author or project owner
/// StreamPay must never call.
contract RevertsOnEverything {
    fallback() external payable {
        revert("RevertsOnEverything");
    }
}

/// @title LiquidationTest
/// @notice Solvency, liquidation, and the guarantee that unsubscribe and liquidate never depend on
/// a third party's state. Fixture: LIQUIDATION_WINDOW = 86_400 s. An account's own operations must
/// leave it covering two windows of gross outflow; it is liquidatable once it covers less than one.
contract LiquidationTest is Base {
    // alice deposits 1 USDC (1e18) and streams 1e12/s to bob: subscribing needs 2 windows (1.728e17);
    // liquidation needs one window, 8.64e16, so she is not liquidatable while
    // 1e18 - 1e12 * t >= 8.64e16, i.e. up to t = 913_600 s.
    uint256 internal constant D = 1e18;
    uint96 internal constant R = 1e12;
    uint256 internal constant LAST_SOLVENT = 913_600;

    function _openAliceToBob() internal {
        _deposit(alice, 1e6);
        _subscribe(alice, bob, R, 0);
    }

    function _authors(uint256 n) internal returns (address[] memory authors) {
        authors = new address[](n);
        for (uint256 i; i < n; ++i) {
            authors[i] = vm.addr(0xA0700 + i);
            vm.label(authors[i], string.concat("author", vm.toString(i)));
        }
    }

    // ---------------------------------------------------------------- when an account is liquidatable

    function test_isLiquidatable_flipsExactlyWhenBalanceDropsBelowWindowOfNetOutflow() public {
        _openAliceToBob();
        assertFalse(sp.isLiquidatable(alice));
        vm.warp(START + LAST_SOLVENT);
        assertEq(sp.balanceOf(alice), 8.64e16, "exactly the window's worth");
        assertFalse(sp.isLiquidatable(alice));
        vm.warp(START + LAST_SOLVENT + 1);
        assertTrue(sp.isLiquidatable(alice));
    }

    function test_liquidate_revertsWhenSolvent() public {
        _openAliceToBob();
        vm.warp(START + LAST_SOLVENT);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNotLiquidatable.selector, alice));
        vm.prank(dave);
        sp.liquidate(alice);
    }

    function test_liquidate_revertsForAccountWithoutStreams() public {
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNotLiquidatable.selector, carol));
        vm.prank(dave);
        sp.liquidate(carol);
        // an author (income only) is never liquidatable
        _openAliceToBob();
        vm.warp(START + 10 * LAST_SOLVENT);
        assertFalse(sp.isLiquidatable(bob));
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNotLiquidatable.selector, bob));
        sp.liquidate(bob);
    }

    function test_isLiquidatable_usesGrossOutflowIgnoringIncome() public {
        // carol streams 0.5e12 to alice: alice's balance falls at 0.5e12/s, but her cover is one
        // window of her GROSS outflow, 1e12 * 86_400 = 8.64e16 (income is revocable)
        _deposit(carol, 100e6);
        _subscribe(carol, alice, 0.5e12, 0);
        _openAliceToBob();
        // live(t) = 1e18 - 0.5e12 * t >= 8.64e16  <=>  t <= 1_827_200
        vm.warp(START + 1_827_200);
        assertEq(sp.balanceOf(alice), 8.64e16);
        assertFalse(sp.isLiquidatable(alice));
        vm.warp(START + 1_827_201);
        assertTrue(sp.isLiquidatable(alice));
    }

    function test_subscribe_incomeIsNotCollateral() public {
        // alice's income covers the stream she wants to open, but income is revocable: with no
        // balance she needs two windows of the gross rate, 2 * 2e12 * 86_400 = 3.456e17
        _deposit(carol, 100e6);
        _subscribe(carol, alice, 2e12, 0);
        vm.expectRevert(
            abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(3.456e17), 0)
        );
        _subscribe(alice, bob, 2e12, 0);
    }

    // ---------------------------------------------------------------- own operations leave two windows

    /// @dev The point of the two-window rule: subscribing at the highest rate the balance allows
    /// leaves the account safe from liquidation for one full window (with one window of cover it
    /// would have been liquidatable, and lost its balance to the liquidator, a second later).
    function test_subscribe_atHighestAffordableRate_notLiquidatableUntilOneFullWindowHasPassed() public {
        _deposit(alice, 1e6); // D = 1e18
        // highest rate with rate * 2 * 86_400 <= 1e18: floor(1e18 / 172_800) = 5_787_037_037_037
        uint96 maxRate = 5_787_037_037_037;
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(166_400), uint256(D)
            )
        );
        _subscribe(alice, bob, maxRate + 1, 0); // (maxRate + 1) * 172_800 = 1e18 + 166_400
        _subscribe(alice, bob, maxRate, 0); // maxRate * 172_800 = 1e18 - 6_400
        assertFalse(sp.isLiquidatable(alice));

        // one second later: nowhere near liquidatable
        vm.warp(START + 1);
        assertFalse(sp.isLiquidatable(alice));
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNotLiquidatable.selector, alice));
        vm.prank(dave);
        sp.liquidate(alice);

        // a full window later: live = 1e18 - maxRate * 86_400 = 500_000_000_000_003_200, still at
        // least one window (maxRate * 86_400 = 499_999_999_999_996_800)
        vm.warp(START + LIQUIDATION_WINDOW);
        assertEq(sp.balanceOf(alice), 500_000_000_000_003_200);
        assertFalse(sp.isLiquidatable(alice));
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNotLiquidatable.selector, alice));
        vm.prank(dave);
        sp.liquidate(alice);

        // the next second the balance, 1e18 - maxRate * 86_401 = 499_994_212_962_966_163, falls
        // below one window: liquidatable, and the liquidator takes what is left
        vm.warp(START + LIQUIDATION_WINDOW + 1);
        assertTrue(sp.isLiquidatable(alice));
        uint256 reward = 499_994_212_962_966_163;
        vm.expectEmit(true, true, true, true, address(sp));
        emit Liquidated(alice, dave, reward, 1);
        vm.prank(dave);
        sp.liquidate(alice);
        assertEq(sp.balanceOf(dave), reward);
        assertEq(sp.balanceOf(bob), uint256(maxRate) * (LIQUIDATION_WINDOW + 1));
        assertEq(sp.signedBalanceOf(alice), int256(0));
    }

    /// @dev The two boundaries side by side on one account: an own operation may leave exactly two
    /// windows of cover but not one wei less, while liquidation needs less than one window.
    function test_ownOperationsNeedTwoWindows_liquidationNeedsLessThanOne() public {
        _openAliceToBob(); // needs 2 * 86_400 * 1e12 = 1.728e17 for own operations
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(1), uint256(1.728e17 - 1)
            )
        );
        vm.prank(alice);
        sp.pay(carol, D - 1.728e17 + 1);
        vm.prank(alice);
        sp.pay(carol, D - 1.728e17);
        assertEq(sp.balanceOf(alice), 1.728e17);
        assertFalse(sp.isLiquidatable(alice));
        // 86_400 s later exactly one window (8.64e16) is left: not liquidatable, but no own spending
        vm.warp(START + 86_400);
        assertEq(sp.balanceOf(alice), 8.64e16);
        assertFalse(sp.isLiquidatable(alice));
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(8.64e16 + 1), uint256(8.64e16 - 1)
            )
        );
        vm.prank(alice);
        sp.pay(carol, 1);
        // one second more: below one window, liquidatable
        vm.warp(START + 86_401);
        assertTrue(sp.isLiquidatable(alice));
        vm.prank(dave);
        sp.liquidate(alice);
        assertEq(sp.balanceOf(dave), 8.64e16 - 1e12);
    }

    // ---------------------------------------------------------------- liquidation effects

    function test_liquidate_stopsTheStreamAndRewardsLiquidatorWithRemainingBalance() public {
        _openAliceToBob();
        uint256 t = LAST_SOLVENT + 1;
        vm.warp(START + t);
        uint256 reward = D - uint256(R) * t; // 8.6399e16
        assertEq(reward, 86_399e12);

        vm.expectEmit(true, true, true, true, address(sp));
        emit StreamRevoked(alice, bob, _encodeRates(R, R, 0));
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, dave, reward);
        vm.expectEmit(true, true, true, true, address(sp));
        emit Liquidated(alice, dave, reward, 1);
        vm.prank(dave);
        sp.liquidate(alice);

        assertEq(sp.signedBalanceOf(alice), int256(0));
        assertEq(sp.balanceOf(dave), reward);
        assertEq(sp.balanceOf(bob), uint256(R) * t);
        (bool active,) = sp.subscriptions(alice, bob);
        assertFalse(active);
        (address[] memory authors,) = sp.allSubscriptions(alice);
        assertEq(authors.length, 0);
        (int256 balance, uint256 income, uint256 outgoing, uint256 updated) = sp.accountInfo(alice);
        assertEq(balance, int256(0));
        assertEq(income, 0);
        assertEq(outgoing, 0);
        assertEq(updated, START + t);
        (, income,,) = sp.accountInfo(bob);
        assertEq(income, 0);
        assertFalse(sp.isLiquidatable(alice));

        // nothing flows any more
        vm.warp(START + 10 * t);
        assertEq(sp.balanceOf(alice), 0);
        assertEq(sp.balanceOf(bob), uint256(R) * t);
        assertEq(sp.balanceOf(dave) + sp.balanceOf(bob), sp.totalSupply(), "no value created or lost");
    }

    function test_liquidate_stopsAllTenStreams() public {
        address[] memory authors = _authors(10);
        _deposit(alice, 1e6);
        for (uint256 i; i < 10; ++i) {
            _subscribe(alice, authors[i], R / 10, 0); // 1e11 each: same net outflow as R
        }
        uint256 t = LAST_SOLVENT + 1;
        vm.warp(START + t);
        assertTrue(sp.isLiquidatable(alice));
        uint256 reward = D - uint256(R) * t;

        // streams are revoked from the end of the list
        for (uint256 i = 10; i > 0; --i) {
            vm.expectEmit(true, true, true, true, address(sp));
            emit StreamRevoked(alice, authors[i - 1], _encodeRates(R / 10, R / 10, 0));
        }
        vm.expectEmit(true, true, true, true, address(sp));
        emit Liquidated(alice, dave, reward, 10);
        vm.prank(dave);
        sp.liquidate(alice);

        (address[] memory left,) = sp.allSubscriptions(alice);
        assertEq(left.length, 0);
        (,, uint256 outgoing,) = sp.accountInfo(alice);
        assertEq(outgoing, 0);
        for (uint256 i; i < 10; ++i) {
            (bool active,) = sp.subscriptions(alice, authors[i]);
            assertFalse(active);
            (, uint256 income,,) = sp.accountInfo(authors[i]);
            assertEq(income, 0);
            assertEq(sp.balanceOf(authors[i]), uint256(R / 10) * t);
        }
        assertEq(sp.balanceOf(dave), reward);
        vm.warp(START + 2 * t);
        assertEq(sp.balanceOf(authors[0]), uint256(R / 10) * t, "stopped");
    }

    function test_liquidate_stopsProjectFeeStreamToo() public {
        uint256 pid = _claimProject(carol, 2000);
        _deposit(alice, 1e6);
        _subscribe(alice, bob, R, pid); // bob 0.8e12, carol 0.2e12
        vm.warp(START + LAST_SOLVENT + 1);
        vm.prank(dave);
        sp.liquidate(alice);
        (, uint256 ownerIn,,) = sp.accountInfo(carol);
        assertEq(ownerIn, 0);
        assertEq(sp.balanceOf(carol), 0.2e12 * (LAST_SOLVENT + 1));
        assertEq(sp.balanceOf(bob), 0.8e12 * (LAST_SOLVENT + 1));
    }

    function test_liquidate_lateLiquidationLeavesNegativeBalance() public {
        _openAliceToBob();
        vm.warp(START + 2_000_000); // 2e18 streamed out of a 1e18 deposit
        assertEq(sp.signedBalanceOf(alice), -1e18);

        vm.recordLogs();
        vm.prank(dave);
        sp.liquidate(alice);
        // no reward Transfer: the logs are exactly StreamRevoked + Liquidated(alice, dave, 0, 1)
        Vm.Log[] memory logs = vm.getRecordedLogs();
        assertEq(logs.length, 2);
        assertEq(logs[0].topics[0], StreamRevoked.selector);
        assertEq(logs[1].topics[0], Liquidated.selector);
        assertEq(logs[1].topics[1], bytes32(uint256(uint160(alice))));
        assertEq(logs[1].topics[2], bytes32(uint256(uint160(dave))));
        assertEq(logs[1].data, abi.encode(uint256(0), uint256(1)));

        assertEq(sp.signedBalanceOf(alice), -1e18, "the debt stays");
        assertEq(sp.balanceOf(alice), 0);
        assertEq(sp.balanceOf(dave), 0);
        assertEq(sp.balanceOf(bob), 2e18);
        assertFalse(sp.isLiquidatable(alice));
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNotLiquidatable.selector, alice));
        sp.liquidate(alice);

        // the owner cannot spend while in debt
        vm.expectRevert(
            abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(1e18 + 1), uint256(0))
        );
        vm.prank(alice);
        sp.pay(carol, 1);
        // a 1/s stream needs 2 * 86_400 of cover on top of repaying the debt
        vm.expectRevert(
            abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(1e18 + 172_800), uint256(0))
        );
        _subscribe(alice, carol, 1, 0);

        // a deposit repays the debt first
        _deposit(alice, 3e6);
        assertEq(sp.signedBalanceOf(alice), 2e18);
        assertEq(sp.totalSupply(), 4e18);
        assertEq(sp.signedBalanceOf(alice) + sp.signedBalanceOf(bob), int256(sp.totalSupply()));
        _subscribe(alice, carol, 1, 0);
    }

    function test_liquidate_accountInDebtWithIncomeAboveOutflowIsLiquidatable() public {
        _openAliceToBob();
        vm.warp(START + 2_000_000); // alice at -1e18, never liquidated
        // carol now streams 3e12 to alice: alice's net flow is +2e12 but she is still in debt
        _deposit(carol, 100e6);
        _subscribe(carol, alice, 3e12, 0);
        assertTrue(sp.isLiquidatable(alice));
        vm.prank(dave);
        sp.liquidate(alice);
        (, uint256 income, uint256 outgoing,) = sp.accountInfo(alice);
        assertEq(income, 3e12, "incoming streams survive the liquidation");
        assertEq(outgoing, 0);
        vm.warp(START + 2_000_000 + 1000);
        assertEq(sp.signedBalanceOf(alice), -1e18 + 3e15);
    }

    function test_liquidate_authorCanLiquidateItsSubscriber() public {
        _openAliceToBob();
        vm.warp(START + LAST_SOLVENT + 1);
        vm.prank(bob);
        sp.liquidate(alice);
        assertEq(sp.balanceOf(bob), uint256(R) * (LAST_SOLVENT + 1) + 86_399e12);
    }

    function test_liquidate_accountCanSubscribeAgainAfterwards() public {
        _openAliceToBob();
        vm.warp(START + LAST_SOLVENT + 1);
        vm.prank(dave);
        sp.liquidate(alice);
        _deposit(alice, 1e6);
        _subscribe(alice, bob, R, 0);
        (address[] memory authors,) = sp.allSubscriptions(alice);
        assertEq(authors.length, 1);
        assertEq(authors[0], bob);
        assertFalse(sp.isLiquidatable(alice));
    }

    // ---------------------------------------------------------------- third parties never block

    function test_unsubscribe_notBlockedByAuthorWithNegativeBalance() public {
        // bob (alice's author) streams 1e12 to carol from a 1e18 deposit and runs into debt
        _deposit(bob, 1e6);
        _subscribe(bob, carol, 1e12, 0);
        _deposit(alice, 10e6);
        _subscribe(alice, bob, 1e11, 0);
        vm.warp(START + 2_000_000);
        // bob: 1e18 + (1e11 - 1e12) * 2e6 = -0.8e18
        assertEq(sp.signedBalanceOf(bob), -0.8e18);
        _unsubscribe(alice, bob);
        (int256 balance, uint256 income, uint256 outgoing, uint256 updated) = sp.accountInfo(bob);
        assertEq(balance, -0.8e18, "bob settled at his negative balance");
        assertEq(income, 0);
        assertEq(outgoing, 1e12);
        assertEq(updated, START + 2_000_000);
        assertEq(sp.balanceOf(alice), 10e18 - 2e17);
    }

    function test_liquidate_notBlockedByAuthorThatIsInsolventAndInDebt() public {
        // bob streams 2R to carol from 1e18; alice streams R to bob from 1e18
        _deposit(bob, 1e6);
        _subscribe(bob, carol, 2 * R, 0);
        _openAliceToBob();
        vm.warp(START + 1_500_000);
        // bob: 1e18 + (R - 2R) * 1.5e6 = -0.5e18; alice: 1e18 - R * 1.5e6 = -0.5e18
        assertEq(sp.signedBalanceOf(bob), -0.5e18);
        assertEq(sp.signedBalanceOf(alice), -0.5e18);
        assertTrue(sp.isLiquidatable(bob));
        assertTrue(sp.isLiquidatable(alice));

        // alice is liquidated while her author is insolvent and unliquidated
        vm.prank(dave);
        sp.liquidate(alice);
        (int256 balance, uint256 income, uint256 outgoing, uint256 updated) = sp.accountInfo(bob);
        assertEq(balance, -0.5e18);
        assertEq(income, 0);
        assertEq(outgoing, 2 * uint256(R));
        assertEq(updated, START + 1_500_000);

        // then bob himself, and nothing is lost
        vm.prank(dave);
        sp.liquidate(bob);
        assertEq(sp.signedBalanceOf(bob), -0.5e18);
        assertEq(sp.signedBalanceOf(alice), -0.5e18);
        assertEq(sp.balanceOf(carol), 3e18);
        assertEq(sp.balanceOf(dave), 0);
        assertEq(sp.signedBalanceOf(alice) + sp.signedBalanceOf(bob) + sp.signedBalanceOf(carol), int256(sp.totalSupply()));
    }

    function test_unsubscribe_and_liquidate_notBlockedByLiquidatedAuthorInDebt() public {
        // bob is liquidated late and left in debt; then alice, who streams to bob, unsubscribes
        // and carol, who also streams to bob, is liquidated
        _deposit(bob, 1e6);
        _subscribe(bob, dave, 1e12, 0);
        vm.warp(START + 3_000_000);
        vm.prank(relayer);
        sp.liquidate(bob);
        assertEq(sp.signedBalanceOf(bob), -2e18);

        _deposit(alice, 10e6);
        _subscribe(alice, bob, 1e12, 0);
        _deposit(carol, 1e6);
        _subscribe(carol, bob, 1e12, 0);
        vm.warp(START + 3_000_000 + 1_000_000);
        _unsubscribe(alice, bob);
        vm.prank(relayer);
        sp.liquidate(carol); // carol: 1e18 - 1e12 * 1e6 = 0 < 8.64e16
        assertEq(sp.signedBalanceOf(bob), -2e18 + 2e18);
        assertEq(sp.signedBalanceOf(carol), int256(0));
        assertEq(sp.balanceOf(alice), 9e18);
    }

    function test_unsubscribe_and_liquidate_notBlockedByRevertingContractProjectOwner() public {
        RevertsOnEverything owner = new RevertsOnEverything();
        uint256 pid = _claimProject(address(owner), 1000);
        assertEq(sp.projectOwner(pid), address(owner));
        _deposit(alice, 1e6);
        _subscribe(alice, bob, R, pid);
        _subscribe(alice, carol, R, pid);
        vm.warp(START + 1000);
        _unsubscribe(alice, bob);
        assertEq(sp.balanceOf(address(owner)), 2 * 0.1e12 * 1000);
        // alice now streams R to carol: solvent until 1e18 - 2e15 - 1e12 * (t - 1000) < 8.64e16
        vm.warp(START + 1000 + 911_601);
        assertTrue(sp.isLiquidatable(alice));
        vm.prank(dave);
        sp.liquidate(alice);
        (, uint256 ownerIn,,) = sp.accountInfo(address(owner));
        assertEq(ownerIn, 0);
        assertEq(sp.balanceOf(address(owner)), 0.2e15 + 0.1e12 * 911_601);
        assertEq(sp.balanceOf(dave), 1e18 - 2e15 - 1e12 * 911_601);
    }

    function test_unsubscribe_and_liquidate_notBlockedByRevertingContractAuthor() public {
        RevertsOnEverything author = new RevertsOnEverything();
        _deposit(alice, 1e6);
        _subscribe(alice, address(author), R, 0);
        _subscribe(alice, bob, R, 0);
        vm.warp(START + 10);
        _unsubscribe(alice, address(author));
        assertEq(sp.balanceOf(address(author)), 10 * 1e12);
        _subscribe(alice, address(author), R, 0);
        vm.warp(START + LAST_SOLVENT); // net 2R from 10 s on: long past the window
        assertTrue(sp.isLiquidatable(alice));
        vm.prank(dave);
        sp.liquidate(alice);
        (, uint256 income,,) = sp.accountInfo(address(author));
        assertEq(income, 0);
        assertEq(sp.balanceOf(address(author)), 1e12 * LAST_SOLVENT);
    }

    function test_unsubscribe_and_liquidate_zeroFeeProjectOwnerUntouched() public {
        uint256 pid = _claimProject(carol, 0);
        _openAliceToBob();
        _subscribe(alice, dave, 1, pid);
        _unsubscribe(alice, dave);
        vm.warp(START + LAST_SOLVENT + 1);
        vm.prank(relayer);
        sp.liquidate(alice);
        (int256 balance, uint256 income, uint256 outgoing, uint256 updated) = sp.accountInfo(carol);
        assertEq(balance, int256(0));
        assertEq(income, 0);
        assertEq(outgoing, 0);
        assertEq(updated, 0, "never touched");
    }

    function test_liquidate_notBlockedByProjectOwnerInDebt() public {
        // carol owns the project and is herself deep in debt from her own stream
        uint256 pid = _claimProject(carol, 2000);
        _deposit(carol, 2e6); // 2e18 covers the 2 * 86_400 * 1e13 = 1.728e18 her subscribe needs
        _subscribe(carol, dave, 1e13, 0);
        _openAliceToBob();
        _subscribe(alice, bob, R, pid); // re-subscribe under the project: bob 0.8e12, carol 0.2e12
        vm.warp(START + LAST_SOLVENT + 1);
        // carol: 2e18 + (0.2e12 - 1e13) * 913_601 < 0
        int256 carolLive = 2e18 + (0.2e12 - 1e13) * int256(LAST_SOLVENT + 1);
        assertEq(sp.signedBalanceOf(carol), carolLive);
        assertLt(carolLive, int256(0));
        vm.prank(relayer);
        sp.liquidate(alice);
        (int256 balance, uint256 income,,) = sp.accountInfo(carol);
        assertEq(balance, carolLive);
        assertEq(income, 0);
        assertEq(sp.balanceOf(relayer), 86_399e12);
    }

    // ---------------------------------------------------------------- precision

    /// @dev $10 per 30 days from a 6-decimal token: rate = floor(10e18 / 2_592_000) per second.
    function test_stream_tenDollarsPerMonthFrom6DecimalDepositWithin1e9Wei() public {
        uint96 rate = uint96(uint256(10e18) / 2_592_000);
        assertEq(uint256(rate), 3_858_024_691_358);
        _deposit(alice, 11e6); // $11
        _subscribe(alice, bob, rate, 0);
        vm.warp(START + 30 days);
        uint256 streamed = sp.balanceOf(bob);
        assertEq(streamed, 9_999_999_999_999_936_000);
        assertApproxEqAbs(streamed, 10e18, 1e9, "within 1e-9 USD of $10");
        assertEq(sp.balanceOf(alice), 11e18 - 9_999_999_999_999_936_000);
        assertFalse(sp.isLiquidatable(alice));
        // whole token units leave; the sub-unit remainder stays
        vm.prank(bob);
        sp.withdraw(streamed);
        assertEq(token.balanceOf(bob), INITIAL_TOKENS + 9_999_999);
        assertEq(sp.balanceOf(bob), 999_999_936_000);
    }
}
