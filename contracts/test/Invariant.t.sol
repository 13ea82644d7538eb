// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {Base} from "./utils/Base.sol";
import {IStreamPay} from "../src/IStreamPay.sol";
import {StreamPayHandler} from "./handlers/StreamPayHandler.sol";
import {ERC1271Wallet} from "./mocks/ERC1271Wallet.sol";

/// @title InvariantTest
/// @notice Handler-based invariants of StreamPay. The fuzzer calls only StreamPayHandler, which
/// performs bounded deposits (transferFrom and Permit2), withdrawals, payments, subscribes with and
/// without project fees, unsubscribes, fee changes, liquidations, time warps and meta-transactions
/// (bySig with the three nonce types and relayer restrictions, bySig(multicall), sponsoredCall,
/// nonce cancellation) over six accounts: four EOAs, an ERC-1271 wallet and the keeper/relayer.
///
/// Solvency invariants assume timely keepers, as the protocol does: the handler liquidates every
/// liquidatable account before letting time pass, and never lets more than `liquidationWindow`
/// seconds pass at once.
contract InvariantTest is Base {
    StreamPayHandler internal handler;
    address[] internal accounts;

    function setUp() public override {
        super.setUp();
        ERC1271Wallet wallet = new ERC1271Wallet(dave);
        vm.label(address(wallet), "wallet");
        address[] memory accts = new address[](6);
        uint256[] memory keys = new uint256[](6);
        (accts[0], accts[1], accts[2], accts[3], accts[4], accts[5]) =
        (alice, bob, carol, dave, address(wallet), relayer);
        (keys[0], keys[1], keys[2], keys[3], keys[4], keys[5]) =
        (ALICE_PK, BOB_PK, CAROL_PK, DAVE_PK, DAVE_PK, RELAYER_PK);
        handler = new StreamPayHandler(sp, token, permit2, relayer, accts, keys);
        accounts = accts;

        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](12);
        selectors[0] = StreamPayHandler.deposit.selector;
        selectors[1] = StreamPayHandler.withdraw.selector;
        selectors[2] = StreamPayHandler.pay.selector;
        selectors[3] = StreamPayHandler.subscribe.selector;
        selectors[4] = StreamPayHandler.subscribe.selector; // streams are the interesting part: twice the weight
        selectors[5] = StreamPayHandler.unsubscribe.selector;
        selectors[6] = StreamPayHandler.liquidate.selector;
        selectors[7] = StreamPayHandler.warp.selector;
        selectors[8] = StreamPayHandler.sponsoredPay.selector;
        selectors[9] = StreamPayHandler.metaBatch.selector;
        selectors[10] = StreamPayHandler.cancelNonces.selector;
        selectors[11] = StreamPayHandler.setFee.selector;
        targetSelector(FuzzSelector(address(handler), selectors));
    }

    // =====================================================================================
    // invariants
    // =====================================================================================

    /// @dev Every action's on-the-spot checks (exact balance deltas, encoded rates, events, exact
    /// revert errors, immediate replays) passed, and no bounded action reverted unexpectedly.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_handlerSawNoViolation() public view {
        assertEq(handler.violations(), 0, handler.firstViolation());
    }

    /// @dev Σ signedBalanceOf over all accounts == totalSupply == deposits − withdrawals, and the
    /// tokens held back it exactly (token units × 1e12).
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_sumOfSignedBalancesEqualsTotalSupply() public view {
        int256 sum;
        for (uint256 i; i < accounts.length; ++i) {
            sum += sp.signedBalanceOf(accounts[i]);
        }
        assertEq(sum, int256(sp.totalSupply()), "sum of signed balances vs totalSupply");
        assertEq(sp.totalSupply(), handler.ghostDeposited() - handler.ghostWithdrawn(), "totalSupply vs ghosts");
        assertEq(token.balanceOf(address(sp)) * SCALE, sp.totalSupply(), "tokens held vs totalSupply");
    }

    /// @dev token.balanceOf(streamPay) × 1e12 ≥ Σ positive balances, and (timely keepers) no
    /// balance is ever negative.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_tokenHeldCoversPositiveBalances() public view {
        uint256 positive;
        for (uint256 i; i < accounts.length; ++i) {
            int256 b = sp.signedBalanceOf(accounts[i]);
            assertGe(b, 0, string.concat("negative balance of ", vm.toString(accounts[i])));
            if (b > 0) positive += uint256(b);
            assertEq(sp.balanceOf(accounts[i]), b > 0 ? uint256(b) : 0, "balanceOf is the floored live balance");
        }
        assertGe(token.balanceOf(address(sp)) * SCALE, positive, "tokens held vs positive balances");
    }

    /// @dev Σ (incomeRate − outgoingRate) over all accounts == 0.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_ratesNetToZero() public view {
        int256 net;
        for (uint256 i; i < accounts.length; ++i) {
            (, uint256 inc, uint256 out,) = sp.accountInfo(accounts[i]);
            net += int256(inc) - int256(out);
        }
        assertEq(net, 0, "sum of income - outgoing rates");
    }

    /// @dev Every stream is the model's (exact encodedRates, income + project fee == outgoing),
    /// allSubscriptions lists exactly the model's streams, and each account's incomeRate and
    /// outgoingRate are the sums over the streams it receives (as author or project owner) and pays.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_streamsMatchModelAndRateSums() public view {
        uint256 n = accounts.length;
        uint256[] memory income = new uint256[](n);
        uint256[] memory outgoing = new uint256[](n);
        for (uint256 i; i < n; ++i) {
            address from = accounts[i];
            uint256 count;
            for (uint256 j; j < n; ++j) {
                (bool active, uint256 enc) = sp.subscriptions(from, accounts[j]);
                uint256 expected = handler.modelStream(from, accounts[j]);
                assertEq(enc, expected, "encodedRates vs model");
                assertEq(active, expected != 0, "active vs model");
                if (!active) continue;
                ++count;
                uint256 inc = enc & type(uint96).max;
                uint256 out = (enc >> 96) & type(uint96).max;
                uint256 projectId = enc >> 192;
                assertLe(inc, out, "income <= outgoing");
                uint256 fee = out - inc; // income + fee == outgoing by construction; the fee must match its bps
                assertLe(fee * BPS, out * MAX_FEE, "fee above 20%");
                if (projectId == 0) assertEq(fee, 0, "no project, no fee");
                outgoing[i] += out;
                income[j] += inc;
                if (fee != 0) income[_indexOf(handler.modelProjectOwner(projectId))] += fee;
            }
            (address[] memory authors, uint256[] memory rates) = sp.allSubscriptions(from);
            assertEq(authors.length, count, "allSubscriptions length");
            for (uint256 k; k < authors.length; ++k) {
                (, uint256 enc) = sp.subscriptions(from, authors[k]);
                assertEq(rates[k], enc, "allSubscriptions rates");
                for (uint256 m; m < k; ++m) {
                    assertTrue(authors[m] != authors[k], "allSubscriptions lists an author twice");
                }
            }
        }
        for (uint256 i; i < n; ++i) {
            (, uint256 inc, uint256 out,) = sp.accountInfo(accounts[i]);
            assertEq(inc, income[i], string.concat("incomeRate of ", vm.toString(accounts[i])));
            assertEq(out, outgoing[i], string.concat("outgoingRate of ", vm.toString(accounts[i])));
        }
    }

    /// @dev accountInfo's `updated` is never ahead of the block.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_updatedNeverAheadOfBlock() public view {
        for (uint256 i; i < accounts.length; ++i) {
            (,,, uint256 updated) = sp.accountInfo(accounts[i]);
            assertLe(updated, block.timestamp, "updated ahead of block.timestamp");
        }
    }

    /// @dev No replay: every signature the handler got executed once is rejected now, with
    /// StreamPayWrongNonce (or StreamPayDeadlineExceeded once it expired); the nonce views equal the
    /// model (so failed calls consumed nothing).
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_noReplayAndNonceViewsMatchModel() public {
        uint256 used = handler.usedSigCount();
        for (uint256 i; i < used; ++i) {
            (address signer, IStreamPay.SignedCall memory c, bytes memory sig) = handler.usedSig(i);
            uint256 deadline = (c.traits >> 208) & (2 ** 40 - 1);
            bytes memory expected = block.timestamp > deadline
                ? abi.encodeWithSelector(IStreamPay.StreamPayDeadlineExceeded.selector, deadline, block.timestamp)
                : abi.encodeWithSelector(
                    IStreamPay.StreamPayWrongNonce.selector,
                    signer,
                    uint8(c.traits >> 254),
                    c.traits & type(uint128).max
                );
            vm.prank(relayer);
            (bool ok, bytes memory err) = address(sp).call(abi.encodeCall(IStreamPay.bySig, (signer, c, sig)));
            assertFalse(ok, "a used signature was accepted again");
            assertEq(err, expected, "replay error");
            if (c.traits >> 254 == 2) {
                assertTrue(sp.bySigUniqueNonces(signer, c.traits & type(uint128).max), "unique nonce marked used");
            }
        }
        bytes4[10] memory sels = [
            IStreamPay.pay.selector,
            IStreamPay.deposit.selector,
            IStreamPay.depositFor.selector,
            IStreamPay.withdraw.selector,
            IStreamPay.withdrawTo.selector,
            IStreamPay.unsubscribe.selector,
            IStreamPay.subscribe.selector,
            IStreamPay.multicall.selector,
            IStreamPay.sponsoredCall.selector,
            IStreamPay.useBySigAccountNonce.selector
        ];
        for (uint256 i; i < accounts.length; ++i) {
            assertEq(sp.bySigAccountNonces(accounts[i]), handler.modelAccountNonce(accounts[i]), "account nonce");
            for (uint256 k; k < sels.length; ++k) {
                assertEq(
                    sp.bySigSelectorNonces(accounts[i], sels[k]),
                    handler.modelSelectorNonce(accounts[i], sels[k]),
                    "selector nonce"
                );
            }
        }
    }

    // =====================================================================================
    // the handler is not vacuous
    // =====================================================================================

    /// @dev A fixed pseudo-random sequence of 200 handler calls, followed by twelve full-window time
    /// warps, exercises every action (including liquidations, subscribes just above the two-window
    /// maximum rate, reverted batches and both project fees) without a violation, and leaves all
    /// invariants true. Guards against bounds that silently skip everything.
    function test_handlerDrive_exercisesEveryActionWithoutViolation() public {
        bytes4[11] memory sel = [
            StreamPayHandler.deposit.selector,
            StreamPayHandler.withdraw.selector,
            StreamPayHandler.pay.selector,
            StreamPayHandler.subscribe.selector,
            StreamPayHandler.unsubscribe.selector,
            StreamPayHandler.liquidate.selector,
            StreamPayHandler.warp.selector,
            StreamPayHandler.sponsoredPay.selector,
            StreamPayHandler.metaBatch.selector,
            StreamPayHandler.cancelNonces.selector,
            StreamPayHandler.setFee.selector
        ];
        for (uint256 i; i < 200; ++i) {
            uint256 r = uint256(keccak256(abi.encode(i, "drive")));
            uint256 k = r % 12;
            if (k == 11) k = 3; // subscribe twice as often, as in setUp's selectors
            uint256[5] memory a;
            for (uint256 j; j < 5; ++j) {
                a[j] = uint256(keccak256(abi.encode(r, j)));
            }
            a[2] %= 1e20;
            if (k == 9) a[2] %= 2; // cancelNonces(.., .., bool signed, ..)
            if (k == 1 || k == 8 || k == 10) a[3] %= 2; // the bool of withdraw, metaBatch, setFee
            (bool ok, bytes memory err) =
                address(handler).call(bytes.concat(sel[k], abi.encode(a[0], a[1], a[2], a[3], a[4])));
            assertTrue(ok, string.concat("handler reverted: ", vm.toString(err)));
        }
        // then time runs on, a full window at a time, with the keeper at work: every stream whose
        // payer runs dry is liquidated (own operations leave two windows of cover, so a random
        // 200-call prefix alone rarely drains an account below one window)
        for (uint256 i; i < 12; ++i) {
            handler.warp(LIQUIDATION_WINDOW);
        }
        assertEq(handler.violations(), 0, handler.firstViolation());
        string[16] memory actions = [
            "deposit",
            "withdraw",
            "pay",
            "subscribe",
            "subscribeWithProject",
            "subscribeAboveMaxRejected",
            "unsubscribe",
            "liquidate",
            "liquidateRejected",
            "warp",
            "sponsoredPay",
            "metaBatch",
            "metaBatchReverted",
            "cancelNonces",
            "setFee",
            "wrongRelayerRejected"
        ];
        for (uint256 i; i < actions.length; ++i) {
            assertGt(handler.calls(actions[i]), 0, string.concat("never exercised: ", actions[i]));
        }
        assertGt(handler.ghostMetaCalls(), 20, "meta-transactions");
        assertEq(handler.ghostReplaysRejected(), handler.ghostMetaCalls(), "every meta-transaction replayed once");
        invariant_handlerSawNoViolation();
        invariant_sumOfSignedBalancesEqualsTotalSupply();
        invariant_tokenHeldCoversPositiveBalances();
        invariant_ratesNetToZero();
        invariant_streamsMatchModelAndRateSums();
        invariant_updatedNeverAheadOfBlock();
        invariant_noReplayAndNonceViewsMatchModel();
    }

    function _indexOf(address a) internal view returns (uint256) {
        for (uint256 i; i < accounts.length; ++i) {
            if (accounts[i] == a) return i;
        }
        revert("unknown account");
    }
}
