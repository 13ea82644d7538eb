// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {IPermit2} from "@1inch/solidity-utils/contracts/interfaces/IPermit2.sol";

import {StreamPay} from "../src/StreamPay.sol";
import {IStreamPay} from "../src/IStreamPay.sol";
import {Base} from "./utils/Base.sol";
import {MockPermit2} from "./utils/MockPermit2.sol";

/// @dev An 18-decimal token: balances are not scaled.
contract Token18 is ERC20 {
    constructor() ERC20("Dai", "DAI") {}

    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}

/// @dev A token with more decimals than StreamPay's internal 18.
contract Token19 {
    function decimals() external pure returns (uint8) {
        return 19;
    }

    function symbol() external pure returns (string memory) {
        return "T19";
    }
}

/// @title StreamPayTest
/// @notice Unit tests of every external function and every revert path of StreamPay. Expected
/// values are computed in the test from the inputs, never read back from the contract under test.
contract StreamPayTest is Base {
    // ---------------------------------------------------------------- constructor and views

    function test_constructor_revertsOnZeroToken() public {
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAddress.selector));
        new StreamPay(IERC20Metadata(address(0)), IPermit2(address(permit2)), 1 days);
    }

    function test_constructor_revertsOnZeroLiquidationWindow() public {
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAmount.selector));
        new StreamPay(IERC20Metadata(address(token)), IPermit2(address(permit2)), 0);
    }

    function test_constructor_revertsOnTokenWithMoreThan18Decimals() public {
        Token19 t19 = new Token19();
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayAmountTooLarge.selector, uint256(19)));
        new StreamPay(IERC20Metadata(address(t19)), IPermit2(address(permit2)), 1 days);
    }

    function test_views_tokenNameSymbolDecimalsWindow() public view {
        assertEq(sp.token(), address(token));
        assertEq(sp.name(), "StreamPay USDC");
        assertEq(sp.symbol(), "spUSDC");
        assertEq(uint256(sp.decimals()), 18);
        assertEq(sp.liquidationWindow(), 86_400);
        assertEq(sp.totalSupply(), 0);
        assertEq(sp.balanceOf(alice), 0);
    }

    function test_constructor_18DecimalTokenIsNotScaled() public {
        Token18 dai = new Token18();
        StreamPay sp18 = new StreamPay(IERC20Metadata(address(dai)), IPermit2(address(permit2)), 7 days);
        assertEq(sp18.name(), "StreamPay DAI");
        assertEq(sp18.symbol(), "spDAI");
        assertEq(sp18.liquidationWindow(), 7 days);
        dai.mint(alice, 5 ether + 3);
        vm.startPrank(alice);
        dai.approve(address(sp18), type(uint256).max);
        sp18.deposit(5 ether + 3, false);
        assertEq(sp18.balanceOf(alice), 5 ether + 3);
        sp18.withdraw(1); // one base unit is a whole token unit at 18 decimals
        vm.stopPrank();
        assertEq(sp18.balanceOf(alice), 5 ether + 2);
        assertEq(dai.balanceOf(alice), 1);
    }

    // ---------------------------------------------------------------- deposit

    function test_deposit_scalesSixDecimalsBy1e12() public {
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(address(0), alice, 1_234_567 * 1e12);
        vm.prank(alice);
        sp.deposit(1_234_567, false); // 1.234567 USDC

        assertEq(sp.balanceOf(alice), 1_234_567_000_000_000_000);
        assertEq(sp.signedBalanceOf(alice), int256(1_234_567_000_000_000_000));
        assertEq(sp.totalSupply(), 1_234_567_000_000_000_000);
        assertEq(token.balanceOf(address(sp)), 1_234_567);
        assertEq(token.balanceOf(alice), INITIAL_TOKENS - 1_234_567);
        (int256 balance, uint256 income, uint256 outgoing, uint256 updated) = sp.accountInfo(alice);
        assertEq(balance, int256(1_234_567_000_000_000_000));
        assertEq(income, 0);
        assertEq(outgoing, 0);
        assertEq(updated, 0, "a credit needs no settlement");
    }

    function test_deposit_revertsOnZeroAmount() public {
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAmount.selector));
        vm.prank(alice);
        sp.deposit(0, false);
    }

    function test_deposit_revertsWhenAmountExceedsMaxSupply() public {
        uint256 amount = (uint256(1) << 160) / 1e12 + 1;
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayAmountTooLarge.selector, amount));
        vm.prank(alice);
        sp.deposit(amount, false);
    }

    function test_deposit_revertsWhenTotalSupplyWouldExceedMax() public {
        uint256 max = (uint256(1) << 160) / 1e12;
        _deposit(bob, max);
        assertEq(sp.totalSupply(), max * 1e12);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayAmountTooLarge.selector, uint256(1)));
        vm.prank(alice);
        sp.deposit(1, false);
    }

    function test_deposit_revertsWithoutTokenAllowance() public {
        (address eve,) = _newUser("eve");
        token.mint(eve, 10e6);
        vm.expectRevert(
            abi.encodeWithSignature("ERC20InsufficientAllowance(address,uint256,uint256)", address(sp), 0, 10e6)
        );
        vm.prank(eve);
        sp.deposit(10e6, false);
    }

    function test_depositFor_creditsRecipientAndPullsFromCaller() public {
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(address(0), bob, 7e6 * 1e12);
        vm.prank(alice);
        sp.depositFor(7e6, bob, false);
        assertEq(sp.balanceOf(bob), 7e18);
        assertEq(sp.balanceOf(alice), 0);
        assertEq(token.balanceOf(alice), INITIAL_TOKENS - 7e6);
        assertEq(token.balanceOf(bob), INITIAL_TOKENS);
        assertEq(sp.totalSupply(), 7e18);
    }

    function test_depositFor_revertsOnZeroRecipient() public {
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAddress.selector));
        vm.prank(alice);
        sp.depositFor(1e6, address(0), false);
    }

    function test_depositFor_revertsOnZeroAmount() public {
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAmount.selector));
        vm.prank(alice);
        sp.depositFor(0, bob, false);
    }

    function test_deposit_permit2PullsThroughPermit2Allowance() public {
        (address eve,) = _newUser("eve");
        token.mint(eve, 50e6);
        vm.startPrank(eve);
        token.approve(address(permit2), type(uint256).max);
        permit2.approve(address(token), address(sp), 30e6, uint48(START + 1 hours));
        sp.deposit(20e6, true);
        vm.stopPrank();

        assertEq(sp.balanceOf(eve), 20e18);
        assertEq(token.balanceOf(eve), 30e6);
        assertEq(token.balanceOf(address(sp)), 20e6);
        assertEq(token.allowance(eve, address(sp)), 0, "no direct allowance used");
        IPermit2.PackedAllowance memory left = permit2.allowance(eve, address(token), address(sp));
        assertEq(uint256(left.amount), 10e6, "Permit2 allowance consumed");
    }

    function test_depositFor_permit2CreditsRecipient() public {
        vm.startPrank(alice);
        token.approve(address(permit2), type(uint256).max);
        permit2.approve(address(token), address(sp), type(uint160).max, uint48(START + 1));
        sp.depositFor(3e6, carol, true);
        vm.stopPrank();
        assertEq(sp.balanceOf(carol), 3e18);
        assertEq(token.balanceOf(alice), INITIAL_TOKENS - 3e6);
    }

    function test_deposit_permit2RevertsWithoutPermit2Allowance() public {
        vm.prank(alice);
        token.approve(address(permit2), type(uint256).max);
        vm.expectRevert(abi.encodeWithSelector(MockPermit2.AllowanceExpired.selector, uint256(0)));
        vm.prank(alice);
        sp.deposit(1e6, true);
    }

    function test_deposit_permit2RevertsAboveAllowance() public {
        vm.startPrank(alice);
        token.approve(address(permit2), type(uint256).max);
        permit2.approve(address(token), address(sp), 1e6, uint48(START + 1));
        vm.expectRevert(abi.encodeWithSelector(MockPermit2.InsufficientAllowance.selector, uint256(1e6)));
        sp.deposit(1e6 + 1, true);
        vm.stopPrank();
    }

    // ---------------------------------------------------------------- withdraw

    function test_withdraw_burnsOnlyWholeTokenUnits() public {
        _deposit(alice, 10e6);
        uint256 tokensBefore = token.balanceOf(alice);
        // 3 whole units plus 999_999_999_999 wei that do not make a fourth
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, address(0), 3e12);
        vm.prank(alice);
        sp.withdraw(3e12 + 999_999_999_999);
        assertEq(token.balanceOf(alice), tokensBefore + 3);
        assertEq(sp.balanceOf(alice), 10e18 - 3e12);
        assertEq(sp.totalSupply(), 10e18 - 3e12);
        assertEq(token.balanceOf(address(sp)), 10e6 - 3);
    }

    function test_withdraw_subUnitRemainderStaysInBalance() public {
        _deposit(bob, 5e6);
        vm.prank(bob);
        sp.pay(alice, 1.5e12); // 1.5 token base units
        uint256 tokensBefore = token.balanceOf(alice);
        vm.prank(alice);
        sp.withdraw(1.5e12);
        assertEq(token.balanceOf(alice), tokensBefore + 1);
        assertEq(sp.balanceOf(alice), 0.5e12, "the half unit stays");
        assertEq(sp.totalSupply(), 5e18 - 1e12);
    }

    function test_withdraw_revertsBelowOneTokenUnit() public {
        _deposit(alice, 1e6);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAmount.selector));
        vm.prank(alice);
        sp.withdraw(1e12 - 1);
    }

    function test_withdraw_revertsOnInsufficientBalance() public {
        _deposit(alice, 1e6);
        // needed: what the balance lacks after the debit; available: what is left (nothing)
        vm.expectRevert(
            abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(1e18), uint256(0))
        );
        vm.prank(alice);
        sp.withdraw(2e18);
    }

    function test_withdraw_revertsWhenItWouldLeaveLessThanTwoWindows() public {
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1e12, 0);
        // own operations must leave 2 windows: required = 2 * 86400 * 1e12 = 1.728e17
        // leaving one window's worth (8.64e16, not liquidatable) lacks another 8.64e16
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(8.64e16), uint256(8.64e16)
            )
        );
        vm.prank(alice);
        sp.withdraw(100e18 - 8.64e16);
        // one token unit (1e12, the smallest withdrawable step) below the two windows lacks exactly 1e12
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(1e12), uint256(1.728e17 - 1e12)
            )
        );
        vm.prank(alice);
        sp.withdraw(100e18 - 1.728e17 + 1e12);
        // leaving exactly two windows' worth is allowed
        vm.prank(alice);
        sp.withdraw(100e18 - 1.728e17);
        assertEq(sp.balanceOf(alice), 1.728e17);
        assertFalse(sp.isLiquidatable(alice));
    }

    function test_withdraw_usesLiveBalanceOfStreamingAccount() public {
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1e12, 0);
        vm.warp(START + 1000);
        // live = 100e18 - 1e15; required 2 * 86400 * 1e12 = 1.728e17; the maximum withdrawable is
        // live - required (a whole number of token units here)
        uint256 maxOut = 100e18 - 1e15 - 1.728e17;
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(1e12), uint256(1.728e17 - 1e12)
            )
        );
        vm.prank(alice);
        sp.withdraw(maxOut + 1e12);
        vm.prank(alice);
        sp.withdraw(maxOut);
        assertEq(sp.balanceOf(alice), 1.728e17);
        // bob withdraws his streamed income
        vm.prank(bob);
        sp.withdraw(1e15);
        assertEq(token.balanceOf(bob), INITIAL_TOKENS + 1e3);
        assertEq(sp.balanceOf(bob), 0);
    }

    function test_withdrawTo_sendsTokensToRecipient() public {
        _deposit(alice, 10e6);
        (address eve,) = _newUser("eve");
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, address(0), 4e18);
        vm.prank(alice);
        sp.withdrawTo(eve, 4e18);
        assertEq(token.balanceOf(eve), 4e6);
        assertEq(sp.balanceOf(alice), 6e18);
        assertEq(sp.balanceOf(eve), 0);
    }

    function test_withdrawTo_revertsOnZeroRecipient() public {
        _deposit(alice, 10e6);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAddress.selector));
        vm.prank(alice);
        sp.withdrawTo(address(0), 1e18);
    }

    // ---------------------------------------------------------------- pay

    function test_pay_movesBalanceAndEmitsTransfer() public {
        _deposit(alice, 10e6);
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, bob, 2.5e18 + 7);
        vm.prank(alice);
        sp.pay(bob, 2.5e18 + 7);
        assertEq(sp.balanceOf(alice), 7.5e18 - 7);
        assertEq(sp.balanceOf(bob), 2.5e18 + 7);
        assertEq(sp.totalSupply(), 10e18, "payments do not change the supply");
    }

    function test_pay_revertsOnZeroReceiver() public {
        _deposit(alice, 10e6);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAddress.selector));
        vm.prank(alice);
        sp.pay(address(0), 1);
    }

    function test_pay_revertsOnZeroAmount() public {
        _deposit(alice, 10e6);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAmount.selector));
        vm.prank(alice);
        sp.pay(bob, 0);
    }

    function test_pay_revertsOnAmountAboveMaxSupply() public {
        _deposit(alice, 10e6);
        uint256 amount = (uint256(1) << 160) + 1;
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayAmountTooLarge.selector, amount));
        vm.prank(alice);
        sp.pay(bob, amount);
    }

    function test_pay_revertsOnInsufficientBalance() public {
        _deposit(alice, 10e6);
        vm.expectRevert(
            abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(1), uint256(0))
        );
        vm.prank(alice);
        sp.pay(bob, 10e18 + 1);
    }

    function test_pay_revertsWhenItWouldLeaveLessThanTwoWindows() public {
        _deposit(alice, 1e6); // 1e18
        _subscribe(alice, bob, 1e10, 0); // own operations require 2 * 86400 * 1e10 = 1.728e15
        vm.warp(START + 100); // live = 1e18 - 1e12
        uint256 live = 1e18 - 1e12;
        uint256 payable_ = live - 1.728e15;
        // leaving one window (8.64e14: not liquidatable) is not enough for an own operation
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(8.64e14), uint256(8.64e14)
            )
        );
        vm.prank(alice);
        sp.pay(carol, live - 8.64e14);
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(1), uint256(1.728e15 - 1)
            )
        );
        vm.prank(alice);
        sp.pay(carol, payable_ + 1);
        vm.prank(alice);
        sp.pay(carol, payable_);
        assertEq(sp.balanceOf(alice), 1.728e15);
        assertEq(sp.balanceOf(carol), payable_);
        // two windows left: still not liquidatable one full window later, liquidatable the second after
        vm.warp(START + 100 + 86_400);
        assertEq(sp.balanceOf(alice), 8.64e14);
        assertFalse(sp.isLiquidatable(alice));
        vm.warp(START + 100 + 86_401);
        assertTrue(sp.isLiquidatable(alice));
    }

    // ---------------------------------------------------------------- subscribe

    function test_subscribe_createsStreamAndEmitsStreamCreated() public {
        _deposit(alice, 100e6);
        uint96 rate = 1e13;
        vm.expectEmit(true, true, true, true, address(sp));
        emit StreamCreated(alice, bob, _encodeRates(rate, rate, 0));
        _subscribe(alice, bob, rate, 0);

        (bool active, uint256 enc) = sp.subscriptions(alice, bob);
        assertTrue(active);
        assertEq(enc, uint256(rate) | (uint256(rate) << 96));
        (int256 balance, uint256 income, uint256 outgoing, uint256 updated) = sp.accountInfo(alice);
        assertEq(balance, int256(100e18));
        assertEq(income, 0);
        assertEq(outgoing, 1e13);
        assertEq(updated, START);
        (balance, income, outgoing, updated) = sp.accountInfo(bob);
        assertEq(balance, int256(0));
        assertEq(income, 1e13);
        assertEq(outgoing, 0);
        assertEq(updated, START);
        (address[] memory authors, uint256[] memory rates) = sp.allSubscriptions(alice);
        assertEq(authors.length, 1);
        assertEq(authors[0], bob);
        assertEq(rates[0], enc);
    }

    function test_subscribe_streamsLinearlyOverTime() public {
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1e13, 0);
        vm.warp(START + 12_345);
        assertEq(sp.balanceOf(alice), 100e18 - 12_345 * 1e13);
        assertEq(sp.signedBalanceOf(alice), int256(100e18 - 12_345 * 1e13));
        assertEq(sp.balanceOf(bob), 12_345 * 1e13);
        assertEq(sp.totalSupply(), 100e18, "streams do not change the supply");
        // the stored balance is untouched until a settlement
        (int256 stored,,, uint256 updated) = sp.accountInfo(alice);
        assertEq(stored, int256(100e18));
        assertEq(updated, START);
    }

    function test_subscribe_revertsOnZeroAuthor() public {
        _deposit(alice, 100e6);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAddress.selector));
        _subscribe(alice, address(0), 1e13, 0);
    }

    function test_subscribe_revertsOnSelfStream() public {
        _deposit(alice, 100e6);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPaySelfStream.selector, alice));
        _subscribe(alice, alice, 1e13, 0);
    }

    function test_subscribe_revertsOnZeroRate() public {
        _deposit(alice, 100e6);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAmount.selector));
        _subscribe(alice, bob, 0, 0);
    }

    function test_subscribe_revertsOnUnclaimedProject() public {
        _deposit(alice, 100e6);
        _claimProject(carol, 0); // project 1 exists, project 2 does not
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayUnknownProject.selector, uint256(2)));
        _subscribe(alice, bob, 1e13, 2);
    }

    function test_subscribe_revertsWhenBalanceCannotCoverTwoWindows() public {
        _deposit(alice, 1e6); // 1e18
        // the highest rate one window allows, floor(1e18 / 86400), no longer fits:
        // required = 11_574_074_074_074 * 2 * 86400 = 1_999_999_999_999_987_200
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(999_999_999_999_987_200), uint256(1e18)
            )
        );
        _subscribe(alice, bob, 11_574_074_074_074, 0);
        uint96 rate = 5_787_037_037_038; // floor(1e18 / 172800) + 1
        // required = rate * 2 * 86400 = 1_000_000_000_000_166_400
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(166_400), uint256(1e18)
            )
        );
        _subscribe(alice, bob, rate, 0);
        // one less per second fits: 5_787_037_037_037 * 172800 = 1e18 - 6_400
        _subscribe(alice, bob, rate - 1, 0);
        (,, uint256 outgoing,) = sp.accountInfo(alice);
        assertEq(outgoing, rate - 1);
        assertFalse(sp.isLiquidatable(alice));
    }

    function test_subscribe_revertsWithoutAnyBalance() public {
        // required = 1 * 2 * 86400
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(172_800), uint256(0)
            )
        );
        _subscribe(alice, bob, 1, 0);
    }

    function test_subscribe_revertsAtMaxStreams() public {
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1, 0);
        // Account slot 0: int192 balance | uint40 updated << 192 | uint16 streamCount << 232 | bool hasRates << 248
        bytes32 slot = keccak256(abi.encode(alice, uint256(6)));
        uint256 word = uint256(vm.load(address(sp), slot));
        assertEq((word >> 232) & 0xffff, 1, "storage layout as expected");
        word = (word & ~(uint256(0xffff) << 232)) | (uint256(65_535) << 232);
        vm.store(address(sp), slot, bytes32(word));
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayTooManyStreams.selector, alice));
        _subscribe(alice, carol, 1, 0);
        // replacing an existing stream needs no new slot
        _subscribe(alice, bob, 2, 0);
    }

    function test_subscribe_resubscribeReplacesStreamAndEmitsStreamRevoked() public {
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1e13, 0);
        vm.warp(START + 100);
        vm.expectEmit(true, true, true, true, address(sp));
        emit StreamRevoked(alice, bob, _encodeRates(1e13, 1e13, 0));
        vm.expectEmit(true, true, true, true, address(sp));
        emit StreamCreated(alice, bob, _encodeRates(3e13, 3e13, 0));
        _subscribe(alice, bob, 3e13, 0);

        (bool active, uint256 enc) = sp.subscriptions(alice, bob);
        assertTrue(active);
        assertEq(enc, _encodeRates(3e13, 3e13, 0));
        (address[] memory authors,) = sp.allSubscriptions(alice);
        assertEq(authors.length, 1, "replaced, not added");
        (int256 balance, uint256 income, uint256 outgoing, uint256 updated) = sp.accountInfo(alice);
        assertEq(balance, int256(100e18 - 100 * 1e13), "settled at the old rate");
        assertEq(outgoing, 3e13);
        assertEq(updated, START + 100);
        (balance, income,,) = sp.accountInfo(bob);
        assertEq(balance, int256(100 * 1e13));
        assertEq(income, 3e13);

        vm.warp(START + 300);
        assertEq(sp.balanceOf(alice), 100e18 - 100 * 1e13 - 200 * 3e13);
        assertEq(sp.balanceOf(bob), 100 * 1e13 + 200 * 3e13);
    }

    function test_subscribe_resubscribeKeepsListPosition() public {
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1, 0);
        _subscribe(alice, carol, 2, 0);
        _subscribe(alice, dave, 3, 0);
        _subscribe(alice, carol, 20, 0);
        (address[] memory authors, uint256[] memory rates) = sp.allSubscriptions(alice);
        assertEq(authors.length, 3);
        assertEq(authors[0], bob);
        assertEq(authors[1], carol);
        assertEq(authors[2], dave);
        assertEq(rates[1], _encodeRates(20, 20, 0));
    }

    function test_subscribe_resubscribeRevertsWhenNewRateIsUnaffordable() public {
        _deposit(alice, 1e6);
        _subscribe(alice, bob, 1e10, 0);
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector,
                alice,
                uint256(2 * 86_400 * 2e13 - 1e18),
                uint256(1e18)
            )
        );
        _subscribe(alice, bob, 2e13, 0);
        (, uint256 enc) = sp.subscriptions(alice, bob);
        assertEq(enc, _encodeRates(1e10, 1e10, 0), "old stream intact after the revert");
        // the replaced rate does not count: the boundary is two windows of the new rate alone,
        // floor(1e18 / 172800) = 5_787_037_037_037 fits, one more per second lacks 166_400
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(166_400), uint256(1e18)
            )
        );
        _subscribe(alice, bob, 5_787_037_037_038, 0);
        _subscribe(alice, bob, 5_787_037_037_037, 0);
        (, enc) = sp.subscriptions(alice, bob);
        assertEq(enc, _encodeRates(5_787_037_037_037, 5_787_037_037_037, 0));
    }

    function test_subscribe_incomeDoesNotOffsetRequiredWindow() public {
        // bob streams 2e13 to alice; alice still needs two windows of her gross outflow
        _deposit(bob, 100e6);
        _subscribe(bob, alice, 2e13, 0);
        _deposit(alice, 3_456_000); // 2 * 2e13 * 86_400 = 3.456e18
        _subscribe(alice, carol, 2e13, 0);
        (,, uint256 outgoing,) = sp.accountInfo(alice);
        assertEq(outgoing, 2e13);
        // one more wei per second needs 2 * 86_400 more, although her income exceeds her outflow
        vm.expectRevert(
            abi.encodeWithSelector(
                IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(172_800), uint256(3.456e18)
            )
        );
        _subscribe(alice, dave, 1, 0);
    }

    // ---------------------------------------------------------------- unsubscribe

    function test_unsubscribe_stopsStreamAndEmitsStreamRevoked() public {
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1e13, 0);
        vm.warp(START + 500);
        vm.expectEmit(true, true, true, true, address(sp));
        emit StreamRevoked(alice, bob, _encodeRates(1e13, 1e13, 0));
        _unsubscribe(alice, bob);

        (bool active, uint256 enc) = sp.subscriptions(alice, bob);
        assertFalse(active);
        assertEq(enc, 0);
        (address[] memory authors,) = sp.allSubscriptions(alice);
        assertEq(authors.length, 0);
        vm.warp(START + 10_000);
        assertEq(sp.balanceOf(alice), 100e18 - 500 * 1e13, "frozen after unsubscribe");
        assertEq(sp.balanceOf(bob), 500 * 1e13);
        (int256 balance, uint256 income, uint256 outgoing, uint256 updated) = sp.accountInfo(bob);
        assertEq(balance, int256(500 * 1e13));
        assertEq(income, 0);
        assertEq(outgoing, 0);
        assertEq(updated, START + 500);
    }

    function test_unsubscribe_revertsWithoutSubscription() public {
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNoSubscription.selector, alice, bob));
        _unsubscribe(alice, bob);
    }

    function test_unsubscribe_revertsWhenCalledTwice() public {
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1e13, 0);
        _unsubscribe(alice, bob);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNoSubscription.selector, alice, bob));
        _unsubscribe(alice, bob);
    }

    function test_unsubscribe_worksWhileSubscriberIsInsolvent() public {
        _deposit(alice, 1e6);
        _subscribe(alice, bob, 1e12, 0);
        vm.warp(START + 2_000_000); // 2e18 streamed out of 1e18
        _unsubscribe(alice, bob);
        assertEq(sp.signedBalanceOf(alice), -1e18);
        assertEq(sp.balanceOf(alice), 0, "floored at zero");
        assertEq(sp.balanceOf(bob), 2e18);
    }

    function test_allSubscriptions_orderAfterSwapPopRemoval() public {
        (address eve,) = _newUser("eve");
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1, 0);
        _subscribe(alice, carol, 2, 0);
        _subscribe(alice, dave, 3, 0);
        _subscribe(alice, eve, 4, 0);

        _unsubscribe(alice, bob); // the last one (eve) moves into slot 0
        (address[] memory authors, uint256[] memory rates) = sp.allSubscriptions(alice);
        address[] memory want = new address[](3);
        want[0] = eve;
        want[1] = carol;
        want[2] = dave;
        assertEq(authors, want);
        uint256[] memory wantRates = new uint256[](3);
        wantRates[0] = _encodeRates(4, 4, 0);
        wantRates[1] = _encodeRates(2, 2, 0);
        wantRates[2] = _encodeRates(3, 3, 0);
        assertEq(rates, wantRates);

        _unsubscribe(alice, dave); // the last one: nothing moves
        _unsubscribe(alice, eve); // slot 0: carol moves in
        (authors,) = sp.allSubscriptions(alice);
        assertEq(authors.length, 1);
        assertEq(authors[0], carol);

        // the moved entry's index was updated: removing and re-adding works
        _subscribe(alice, bob, 5, 0);
        _unsubscribe(alice, carol);
        (authors, rates) = sp.allSubscriptions(alice);
        assertEq(authors.length, 1);
        assertEq(authors[0], bob);
        assertEq(rates[0], _encodeRates(5, 5, 0));
        (,, uint256 outgoing,) = sp.accountInfo(alice);
        assertEq(outgoing, 5);
    }

    function test_subscriptions_returnsFalseForUnknownPair() public view {
        (bool active, uint256 enc) = sp.subscriptions(alice, bob);
        assertFalse(active);
        assertEq(enc, 0);
        (address[] memory authors, uint256[] memory rates) = sp.allSubscriptions(alice);
        assertEq(authors.length, 0);
        assertEq(rates.length, 0);
    }

    // ---------------------------------------------------------------- balances

    function test_balanceOf_flooredAtZeroWhileSignedBalanceIsNegative() public {
        _deposit(alice, 1e6);
        _subscribe(alice, bob, 1e12, 0);
        vm.warp(START + 1_000_001);
        assertEq(sp.signedBalanceOf(alice), -1e12);
        assertEq(sp.balanceOf(alice), 0);
        assertEq(sp.balanceOf(bob), 1_000_001 * 1e12);
    }

    // ---------------------------------------------------------------- projects and fees

    function test_claimProjectId_assignsSequentialIdsAndEmits() public {
        vm.expectEmit(true, true, true, true, address(sp));
        emit ProjectIdClaimed(1, carol);
        vm.prank(carol);
        assertEq(sp.claimProjectId(), 1);
        vm.expectEmit(true, true, true, true, address(sp));
        emit ProjectIdClaimed(2, dave);
        vm.prank(dave);
        assertEq(sp.claimProjectId(), 2);
        assertEq(sp.projectOwner(1), carol);
        assertEq(sp.projectOwner(2), dave);
        assertEq(sp.projectOwner(3), address(0));
        assertEq(sp.projectOwner(0), address(0));
    }

    function test_claimProjectId_revertsPastUint48() public {
        // _nextProjectId lives in slot 5
        vm.store(address(sp), bytes32(uint256(5)), bytes32(uint256(type(uint48).max)));
        vm.prank(carol);
        assertEq(sp.claimProjectId(), type(uint48).max);
        vm.expectRevert(
            abi.encodeWithSelector(IStreamPay.StreamPayUnknownProject.selector, uint256(type(uint48).max) + 1)
        );
        vm.prank(carol);
        sp.claimProjectId();
    }

    function test_setDefaultSettings_setsFeeAndEmits() public {
        uint256 pid = _claimProject(carol, 0);
        vm.expectEmit(true, true, true, true, address(sp));
        emit DefaultSettingsSet(pid, 1500);
        vm.prank(carol);
        sp.setDefaultSettings(IStreamPay.Settings(1500), pid);
        assertEq(uint256(sp.projectFeeFor(pid, bob)), 1500);
        assertEq(uint256(sp.projectFeeFor(pid, dave)), 1500);
        assertEq(uint256(sp.projectFeeFor(0, bob)), 0, "project 0 never has a fee");
    }

    function test_setDefaultSettings_acceptsExactly20Percent() public {
        uint256 pid = _claimProject(carol, 0);
        vm.prank(carol);
        sp.setDefaultSettings(IStreamPay.Settings(2000), pid);
        assertEq(uint256(sp.projectFeeFor(pid, bob)), 2000);
    }

    function test_setDefaultSettings_revertsAbove20Percent() public {
        uint256 pid = _claimProject(carol, 0);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayFeeTooHigh.selector, uint16(2001), uint16(2000)));
        vm.prank(carol);
        sp.setDefaultSettings(IStreamPay.Settings(2001), pid);
    }

    function test_setDefaultSettings_revertsForUnknownProject() public {
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayUnknownProject.selector, uint256(7)));
        vm.prank(carol);
        sp.setDefaultSettings(IStreamPay.Settings(100), 7);
    }

    function test_setDefaultSettings_revertsForNonOwner() public {
        uint256 pid = _claimProject(carol, 0);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNotProjectOwner.selector, pid, bob));
        vm.prank(bob);
        sp.setDefaultSettings(IStreamPay.Settings(100), pid);
    }

    function test_setSettingsForUser_overridesDefaultAndEmits() public {
        uint256 pid = _claimProject(carol, 1000);
        vm.expectEmit(true, true, true, true, address(sp));
        emit UserSettingsSet(pid, bob, 300);
        vm.prank(carol);
        sp.setSettingsForUser(bob, IStreamPay.Settings(300), pid);
        assertEq(uint256(sp.projectFeeFor(pid, bob)), 300);
        assertEq(uint256(sp.projectFeeFor(pid, dave)), 1000);
        // an explicit zero also overrides the default
        vm.prank(carol);
        sp.setSettingsForUser(dave, IStreamPay.Settings(0), pid);
        assertEq(uint256(sp.projectFeeFor(pid, dave)), 0);
        // and a later default change does not touch an author with its own setting
        vm.prank(carol);
        sp.setDefaultSettings(IStreamPay.Settings(50), pid);
        assertEq(uint256(sp.projectFeeFor(pid, bob)), 300);
        assertEq(uint256(sp.projectFeeFor(pid, dave)), 0);
        assertEq(uint256(sp.projectFeeFor(pid, alice)), 50);
    }

    function test_setSettingsForUser_revertsAbove20Percent() public {
        uint256 pid = _claimProject(carol, 0);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayFeeTooHigh.selector, uint16(65_535), uint16(2000)));
        vm.prank(carol);
        sp.setSettingsForUser(bob, IStreamPay.Settings(65_535), pid);
    }

    function test_setSettingsForUser_revertsForUnknownProject() public {
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayUnknownProject.selector, uint256(0)));
        vm.prank(carol);
        sp.setSettingsForUser(bob, IStreamPay.Settings(100), 0);
    }

    function test_setSettingsForUser_revertsForNonOwner() public {
        uint256 pid = _claimProject(carol, 0);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayNotProjectOwner.selector, pid, dave));
        vm.prank(dave);
        sp.setSettingsForUser(bob, IStreamPay.Settings(100), pid);
    }

    function test_subscribe_feeIsCarvedFromRateAndStreamedToProjectOwner() public {
        uint256 pid = _claimProject(carol, 250); // 2.5%
        _deposit(alice, 200e6); // rate 1e15 needs 2 * 86400 * 1e15 = 1.728e20 of cover
        // rate 1e15: fee 2.5e13, author income 9.75e14
        vm.expectEmit(true, true, true, true, address(sp));
        emit StreamCreated(alice, bob, _encodeRates(9.75e14, 1e15, pid));
        _subscribe(alice, bob, 1e15, pid);

        (, uint256 enc) = sp.subscriptions(alice, bob);
        assertEq(enc & type(uint96).max, 9.75e14);
        assertEq((enc >> 96) & type(uint96).max, 1e15);
        assertEq(enc >> 192, pid);
        (,, uint256 out,) = sp.accountInfo(alice);
        (, uint256 authorIn,,) = sp.accountInfo(bob);
        (, uint256 ownerIn,,) = sp.accountInfo(carol);
        assertEq(authorIn, 9.75e14);
        assertEq(ownerIn, 2.5e13);
        assertEq(authorIn + ownerIn, out, "income + fee == outgoing");

        vm.warp(START + 1000);
        assertEq(sp.balanceOf(bob), 9.75e17);
        assertEq(sp.balanceOf(carol), 2.5e16);
        assertEq(sp.balanceOf(alice), 200e18 - 1e18);
    }

    function test_subscribe_feeRoundsDownAndIncomePlusFeeEqualsOutgoing() public {
        uint256 pid = _claimProject(carol, 333);
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 12_345, pid); // fee floor(12345 * 333 / 10000) = 411
        (, uint256 enc) = sp.subscriptions(alice, bob);
        assertEq(enc, _encodeRates(11_934, 12_345, pid));
        (, uint256 ownerIn,,) = sp.accountInfo(carol);
        assertEq(ownerIn, 411);
        vm.warp(START + 777);
        assertEq(sp.balanceOf(bob) + sp.balanceOf(carol), 12_345 * 777);
        assertEq(sp.balanceOf(alice), 100e18 - 12_345 * 777);
    }

    function test_subscribe_userSpecificFeeOverridesDefault() public {
        uint256 pid = _claimProject(carol, 2000);
        vm.prank(carol);
        sp.setSettingsForUser(bob, IStreamPay.Settings(100), pid);
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1e6, pid); // 1% fee
        _subscribe(alice, dave, 1e6, pid); // 20% default
        (, uint256 encBob) = sp.subscriptions(alice, bob);
        (, uint256 encDave) = sp.subscriptions(alice, dave);
        assertEq(encBob, _encodeRates(990_000, 1e6, pid));
        assertEq(encDave, _encodeRates(800_000, 1e6, pid));
        (, uint256 ownerIn,,) = sp.accountInfo(carol);
        assertEq(ownerIn, 10_000 + 200_000);
    }

    function test_subscribe_zeroFeeProjectStreamsNothingToOwner() public {
        uint256 pid = _claimProject(carol, 0);
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1e12, pid);
        (, uint256 enc) = sp.subscriptions(alice, bob);
        assertEq(enc, _encodeRates(1e12, 1e12, pid));
        (int256 balance, uint256 ownerIn,, uint256 updated) = sp.accountInfo(carol);
        assertEq(ownerIn, 0);
        assertEq(balance, int256(0));
        assertEq(updated, 0, "owner untouched");
    }

    function test_setDefaultSettings_existingStreamsKeepTheirRates() public {
        uint256 pid = _claimProject(carol, 1000);
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1e12, pid); // 10%
        vm.prank(carol);
        sp.setDefaultSettings(IStreamPay.Settings(2000), pid);
        (, uint256 enc) = sp.subscriptions(alice, bob);
        assertEq(enc, _encodeRates(0.9e12, 1e12, pid), "unchanged by the fee change");
        (, uint256 ownerIn,,) = sp.accountInfo(carol);
        assertEq(ownerIn, 0.1e12);
        vm.warp(START + 100);
        assertEq(sp.balanceOf(bob), 0.9e14);
        assertEq(sp.balanceOf(carol), 0.1e14);

        // a new stream pays the new fee; re-subscribing picks it up too
        _subscribe(alice, dave, 1e12, pid);
        (, enc) = sp.subscriptions(alice, dave);
        assertEq(enc, _encodeRates(0.8e12, 1e12, pid));
        _subscribe(alice, bob, 1e12, pid);
        (, enc) = sp.subscriptions(alice, bob);
        assertEq(enc, _encodeRates(0.8e12, 1e12, pid));
        (, ownerIn,,) = sp.accountInfo(carol);
        assertEq(ownerIn, 0.4e12);
    }

    function test_unsubscribe_afterFeeChangeRemovesTheOriginalRates() public {
        uint256 pid = _claimProject(carol, 1000);
        _deposit(alice, 100e6);
        _subscribe(alice, bob, 1e12, pid);
        vm.prank(carol);
        sp.setSettingsForUser(bob, IStreamPay.Settings(0), pid);
        vm.warp(START + 10);
        vm.expectEmit(true, true, true, true, address(sp));
        emit StreamRevoked(alice, bob, _encodeRates(0.9e12, 1e12, pid));
        _unsubscribe(alice, bob);
        (, uint256 ownerIn,,) = sp.accountInfo(carol);
        (, uint256 authorIn,,) = sp.accountInfo(bob);
        assertEq(ownerIn, 0);
        assertEq(authorIn, 0);
        assertEq(sp.balanceOf(carol), 0.1e13);
        assertEq(sp.balanceOf(bob), 0.9e13);
    }

    function test_subscribe_projectOwnerSubscribingUnderOwnProjectPaysOnlyNet() public {
        uint256 pid = _claimProject(alice, 2000);
        _deposit(alice, 1e6);
        _subscribe(alice, bob, 1e12, pid);
        (, uint256 income, uint256 outgoing,) = sp.accountInfo(alice);
        assertEq(income, 0.2e12);
        assertEq(outgoing, 1e12);
        vm.warp(START + 1000);
        assertEq(sp.balanceOf(alice), 1e18 - 0.8e15);
        _unsubscribe(alice, bob);
        (, income, outgoing,) = sp.accountInfo(alice);
        assertEq(income, 0);
        assertEq(outgoing, 0);
        assertEq(sp.balanceOf(bob), 0.8e15);
    }

    // ---------------------------------------------------------------- meta-transactions (basics; see MetaTx.t.sol)

    function _traits(uint256 nonceType, uint256 deadline, address relayer_, uint256 nonce)
        internal
        pure
        returns (uint256)
    {
        return (nonceType << 254) | (deadline << 208) | ((uint256(uint160(relayer_)) & ((1 << 80) - 1)) << 128)
            | nonce;
    }

    /// @dev EIP-712 digest computed from the spec, independently of `hashBySig`.
    function _digest(address signer, uint256 traits, bytes memory data) internal view returns (bytes32) {
        bytes32 domain = keccak256(
            abi.encode(
                keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                keccak256("StreamPay"),
                keccak256("1"),
                block.chainid,
                address(sp)
            )
        );
        bytes32 structHash = keccak256(
            abi.encode(keccak256("SignedCall(address signer,uint256 traits,bytes data)"), signer, traits, keccak256(data))
        );
        return keccak256(abi.encodePacked("\x19\x01", domain, structHash));
    }

    function _signCall(uint256 pk, uint256 traits, bytes memory data) internal view returns (bytes memory) {
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(pk, _digest(vm.addr(pk), traits, data));
        return abi.encodePacked(r, s, v);
    }

    function test_hashBySig_matchesEip712Digest() public view {
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 1));
        uint256 traits = _traits(0, START + 60, address(0), 0);
        assertEq(sp.hashBySig(alice, IStreamPay.SignedCall(traits, data)), _digest(alice, traits, data));
    }

    function test_bySig_runsCallAsSignerAndConsumesAccountNonce() public {
        _deposit(alice, 10e6);
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 1e18));
        uint256 traits = _traits(0, START + 60, address(0), 0);
        bytes memory sig = _signCall(ALICE_PK, traits, data);
        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 0, bytes4(0), 0);
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, bob, 1e18);
        vm.prank(relayer);
        sp.bySig(alice, IStreamPay.SignedCall(traits, data), sig);
        assertEq(sp.balanceOf(alice), 9e18);
        assertEq(sp.balanceOf(bob), 1e18);
        assertEq(sp.bySigAccountNonces(alice), 1);
    }

    function test_bySig_revertsAfterDeadline() public {
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 1));
        uint256 traits = _traits(0, START - 1, address(0), 0);
        bytes memory sig = _signCall(ALICE_PK, traits, data);
        vm.expectRevert(
            abi.encodeWithSelector(IStreamPay.StreamPayDeadlineExceeded.selector, uint256(START - 1), uint256(START))
        );
        vm.prank(relayer);
        sp.bySig(alice, IStreamPay.SignedCall(traits, data), sig);
    }

    function test_bySig_revertsForAnotherRelayer() public {
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 1));
        uint256 traits = _traits(0, START + 60, relayer, 0);
        bytes memory sig = _signCall(ALICE_PK, traits, data);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayWrongRelayer.selector, dave));
        vm.prank(dave);
        sp.bySig(alice, IStreamPay.SignedCall(traits, data), sig);
    }

    function test_bySig_revertsOnWrongAccountNonce() public {
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 1));
        uint256 traits = _traits(0, START + 60, address(0), 5);
        bytes memory sig = _signCall(ALICE_PK, traits, data);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(0), uint256(5)));
        sp.bySig(alice, IStreamPay.SignedCall(traits, data), sig);
    }

    function test_bySig_revertsOnWrongSignature() public {
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 1));
        uint256 traits = _traits(0, START + 60, address(0), 0);
        bytes memory sig = _signCall(BOB_PK, traits, data);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayWrongSignature.selector, alice));
        sp.bySig(alice, IStreamPay.SignedCall(traits, data), sig);
    }

    function test_bySig_revertsOnUnknownNonceType() public {
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 1));
        uint256 traits = _traits(3, START + 60, address(0), 0);
        bytes memory sig = _signCall(ALICE_PK, traits, data);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayWrongNonceType.selector, uint256(3)));
        sp.bySig(alice, IStreamPay.SignedCall(traits, data), sig);
    }

    function test_bySig_selectorAndUniqueNonces() public {
        _deposit(alice, 10e6);
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 1));
        uint256 traits = _traits(1, START + 60, address(0), 0);
        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 1, IStreamPay.pay.selector, 0);
        sp.bySig(alice, IStreamPay.SignedCall(traits, data), _signCall(ALICE_PK, traits, data));
        assertEq(sp.bySigSelectorNonces(alice, IStreamPay.pay.selector), 1);
        assertEq(sp.bySigSelectorNonces(alice, IStreamPay.withdraw.selector), 0);
        assertEq(sp.bySigAccountNonces(alice), 0);

        traits = _traits(2, START + 60, address(0), 777);
        assertFalse(sp.bySigUniqueNonces(alice, 777));
        sp.bySig(alice, IStreamPay.SignedCall(traits, data), _signCall(ALICE_PK, traits, data));
        assertTrue(sp.bySigUniqueNonces(alice, 777));
        assertFalse(sp.bySigUniqueNonces(alice, 776));
        bytes memory sig = _signCall(ALICE_PK, traits, data);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(2), uint256(777)));
        sp.bySig(alice, IStreamPay.SignedCall(traits, data), sig);
        assertEq(sp.balanceOf(bob), 2);
    }

    function test_useBySigAccountNonce_advancesAndEmits() public {
        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 0, bytes4(0), 2);
        vm.prank(alice);
        sp.useBySigAccountNonce(3);
        assertEq(sp.bySigAccountNonces(alice), 3);
    }

    function test_useBySigAccountNonce_revertsOnZero() public {
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayZeroAmount.selector));
        vm.prank(alice);
        sp.useBySigAccountNonce(0);
    }

    function test_sponsoredCall_chargesSignerInFavourOfRelayer() public {
        _deposit(alice, 10e6);
        bytes memory inner = abi.encodeCall(IStreamPay.pay, (carol, 1e18));
        bytes memory data = abi.encodeCall(IStreamPay.sponsoredCall, (address(sp), 1e17, inner, ""));
        uint256 traits = _traits(0, START + 60, relayer, 0);
        bytes memory sig = _signCall(ALICE_PK, traits, data);
        vm.expectEmit(true, true, true, true, address(sp));
        emit SponsoredCallCharged(alice, relayer, 1e17);
        vm.prank(relayer);
        sp.bySig(alice, IStreamPay.SignedCall(traits, data), sig);
        assertEq(sp.balanceOf(alice), 10e18 - 1.1e18);
        assertEq(sp.balanceOf(carol), 1e18);
        assertEq(sp.balanceOf(relayer), 1e17);
    }

    function test_sponsoredCall_directCallChargesNothing() public {
        _deposit(alice, 10e6);
        vm.prank(alice);
        sp.sponsoredCall(address(sp), 1e17, abi.encodeCall(IStreamPay.pay, (carol, 1e18)), "");
        assertEq(sp.balanceOf(alice), 9e18);
        assertEq(sp.balanceOf(carol), 1e18);
    }

    function test_sponsoredCall_revertsOnOtherFeeToken() public {
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayUnsupportedFeeToken.selector, address(token)));
        vm.prank(alice);
        sp.sponsoredCall(address(token), 1, abi.encodeCall(IStreamPay.pay, (carol, 1)), "");
    }

    function test_permitAndCall_eip2612PermitThenDeposit() public {
        (address eve, uint256 evePk) = _newUser("eve");
        token.mint(eve, 25e6);
        uint256 deadline = START + 1 hours;
        bytes32 structHash = keccak256(
            abi.encode(
                keccak256("Permit(address owner,address spender,uint256 value,uint256 nonce,uint256 deadline)"),
                eve,
                address(sp),
                25e6,
                0,
                deadline
            )
        );
        (uint8 v, bytes32 r, bytes32 s) =
            vm.sign(evePk, keccak256(abi.encodePacked("\x19\x01", token.DOMAIN_SEPARATOR(), structHash)));
        bytes memory permit = abi.encodePacked(address(token), abi.encode(eve, address(sp), 25e6, deadline, v, r, s));
        vm.prank(eve);
        sp.permitAndCall(permit, abi.encodeCall(IStreamPay.deposit, (25e6, false)));
        assertEq(sp.balanceOf(eve), 25e18);
        assertEq(token.balanceOf(eve), 0);
        assertEq(token.nonces(eve), 1);
    }

    function test_permitAndCall_permit2PermitThenDeposit() public {
        (address eve, uint256 evePk) = _newUser("eve");
        token.mint(eve, 25e6);
        vm.prank(eve);
        token.approve(address(permit2), type(uint256).max);
        IPermit2.PermitSingle memory ps = IPermit2.PermitSingle(
            IPermit2.PermitDetails(address(token), 25e6, uint48(START + 1 hours), 0), address(sp), START + 1 hours
        );
        (uint8 v, bytes32 r, bytes32 s) = vm.sign(evePk, permit2.hashPermitSingle(ps));
        bytes memory permit = abi.encodePacked(address(permit2), abi.encode(eve, ps, abi.encodePacked(r, s, v)));
        vm.prank(eve);
        sp.permitAndCall(permit, abi.encodeCall(IStreamPay.deposit, (25e6, true)));
        assertEq(sp.balanceOf(eve), 25e18);
        assertEq(token.balanceOf(eve), 0);
    }

    function test_permitAndCall_ignoresFailedPermitWhenAllowanceExists() public {
        // a front-run permit fails, but the allowance it set is there: the action still runs
        bytes memory permit =
            abi.encodePacked(address(token), abi.encode(alice, address(sp), 1e6, START + 1, uint8(27), bytes32(0), bytes32(0)));
        vm.prank(alice);
        sp.permitAndCall(permit, abi.encodeCall(IStreamPay.deposit, (1e6, false)));
        assertEq(sp.balanceOf(alice), 1e18);
    }

    function test_permitAndCall_revertsOnUnsupportedTarget() public {
        bytes memory permit = abi.encodePacked(address(bob), abi.encode(uint256(1)));
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayUnsupportedPermit.selector, bob));
        vm.prank(alice);
        sp.permitAndCall(permit, abi.encodeCall(IStreamPay.deposit, (1e6, false)));
    }

    function test_multicall_runsAllCallsAsCaller() public {
        _deposit(alice, 10e6);
        bytes[] memory calls = new bytes[](3);
        calls[0] = abi.encodeCall(IStreamPay.pay, (bob, 1e18));
        calls[1] = abi.encodeCall(IStreamPay.pay, (carol, 2e18));
        calls[2] = abi.encodeCall(IStreamPay.subscribe, (dave, 1e12, 0));
        vm.prank(alice);
        sp.multicall(calls);
        assertEq(sp.balanceOf(bob), 1e18);
        assertEq(sp.balanceOf(carol), 2e18);
        assertEq(sp.balanceOf(alice), 7e18);
        (bool active,) = sp.subscriptions(alice, dave);
        assertTrue(active);
    }

    function test_multicall_isAllOrNothing() public {
        _deposit(alice, 10e6);
        bytes[] memory calls = new bytes[](2);
        calls[0] = abi.encodeCall(IStreamPay.pay, (bob, 1e18));
        calls[1] = abi.encodeCall(IStreamPay.pay, (carol, 10e18));
        vm.expectRevert(
            abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, uint256(1e18), uint256(0))
        );
        vm.prank(alice);
        sp.multicall(calls);
        assertEq(sp.balanceOf(alice), 10e18);
        assertEq(sp.balanceOf(bob), 0);
    }
}
