// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {Base} from "./utils/Base.sol";
import {IStreamPay} from "../src/IStreamPay.sol";
import {StreamPayHandler, IHandlerToken} from "./handlers/StreamPayHandler.sol";
import {ERC1271Wallet} from "./mocks/ERC1271Wallet.sol";
import {HookToken} from "./mocks/Tokens.sol";
import {StreamPay} from "../src/StreamPay.sol";
import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {IPermit2} from "@1inch/solidity-utils/contracts/interfaces/IPermit2.sol";

/// @title InvariantTest
/// @notice Handler-based invariants of StreamPay. The fuzzer calls only StreamPayHandler, which
/// performs bounded deposits (transferFrom and Permit2, and Permit2 amounts above uint160 that must
/// be refused), withdrawals (also to a merchant whose token hook tries to re-enter), payments,
/// subscribes with and without project fees, many streams per account up to the cap, cycles of
/// accounts streaming to each other, unsubscribes, fee changes, liquidations, time warps with a
/// LATE keeper and meta-transactions (bySig with the three nonce types and relayer restrictions,
/// bySig(multicall), sponsoredCall, nonce cancellation, each replayed as the same signer and as
/// every other account of the same key) over six acting accounts (four EOAs, an ERC-1271 wallet
/// of dave's key and the keeper/relayer) and 105 passive ones (a merchant, 104 dust authors).
///
/// The keeper is late, as real keepers are: each account is liquidated some latency after the
/// first second it is liquidatable, drawn anywhere in 0 .. liquidationWindow - 1 s. The
/// invariants hold for ANY such keeper; this suite runs the 6-decimal MockToken, and
/// InvariantHookToken18Test the same suite on an 18-decimal token with transfer hooks, starting
/// from an empty deployment.
contract InvariantTest is Base {
    StreamPayHandler internal handler;
    address[] internal accounts; // every account that can hold a balance (acting, then passive)
    mapping(address => uint256) internal _indexPlusOne;
    IHandlerToken internal held; // the deployment's token
    uint256 internal scale;

    /// @dev The deployment under test: Base's 6-decimal MockToken deployment, initial deposits.
    function _deployment() internal virtual returns (address tokenAddr, bool empty) {
        return (address(token), false);
    }

    function setUp() public override {
        super.setUp();
        (address tokenAddr, bool empty) = _deployment();
        held = IHandlerToken(tokenAddr);
        scale = 10 ** (18 - uint256(held.decimals()));
        ERC1271Wallet wallet = new ERC1271Wallet(dave);
        vm.label(address(wallet), "wallet");
        address[] memory accts = new address[](6);
        uint256[] memory keys = new uint256[](6);
        (accts[0], accts[1], accts[2], accts[3], accts[4], accts[5]) =
        (alice, bob, carol, dave, address(wallet), relayer);
        (keys[0], keys[1], keys[2], keys[3], keys[4], keys[5]) =
        (ALICE_PK, BOB_PK, CAROL_PK, DAVE_PK, DAVE_PK, RELAYER_PK);
        handler = new StreamPayHandler(sp, tokenAddr, permit2, relayer, accts, keys, empty);
        accounts = handler.allAccounts();
        for (uint256 i; i < accounts.length; ++i) {
            _indexPlusOne[accounts[i]] = i + 1;
        }

        targetContract(address(handler));
        bytes4[] memory selectors = new bytes4[](16);
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
        selectors[12] = StreamPayHandler.subscribeMany.selector;
        selectors[13] = StreamPayHandler.cycle.selector;
        selectors[14] = StreamPayHandler.depositHuge.selector;
        selectors[15] = StreamPayHandler.warp.selector; // the late keeper is where solvency is tested
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
        assertEq(held.balanceOf(address(sp)) * scale, sp.totalSupply(), "tokens held vs totalSupply");
    }

    /// @dev token.balanceOf(streamPay) × scale ≥ Σ positive balances, and no balance is ever
    /// negative although the keeper acts late (anywhere inside the window); the lowest live balance
    /// any liquidation found was non-negative.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_tokenHeldCoversPositiveBalances() public view {
        uint256 positive;
        for (uint256 i; i < accounts.length; ++i) {
            int256 b = sp.signedBalanceOf(accounts[i]);
            assertGe(b, 0, string.concat("negative balance of ", vm.toString(accounts[i])));
            if (b > 0) positive += uint256(b);
            assertEq(sp.balanceOf(accounts[i]), b > 0 ? uint256(b) : 0, "balanceOf is the floored live balance");
        }
        assertGe(held.balanceOf(address(sp)) * scale, positive, "tokens held vs positive balances");
        assertGe(handler.ghostLowestLiveAtLiquidation(), 0, "a late keeper found a negative balance");
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

    /// @dev Every stream is the model's (exact encodedRates, income + project fee == outgoing, fee
    /// at most 20%), allSubscriptions lists exactly the model's streams (count included, at most
    /// maxStreams), and each account's incomeRate and outgoingRate are the sums over the streams it
    /// receives (as author or project owner) and pays.
    /// forge-config: default.invariant.fail-on-revert = true
    function invariant_streamsMatchModelAndRateSums() public view {
        uint256 n = accounts.length;
        uint256[] memory income = new uint256[](n);
        uint256[] memory outgoing = new uint256[](n);
        uint256 cap = sp.maxStreams();
        for (uint256 i; i < n; ++i) {
            address from = accounts[i];
            (address[] memory authors, uint256[] memory rates) = sp.allSubscriptions(from);
            assertEq(authors.length, handler.modelStreamCount(from), "allSubscriptions length vs model");
            assertLe(authors.length, cap, "more streams than the cap");
            for (uint256 k; k < authors.length; ++k) {
                (bool active, uint256 enc) = sp.subscriptions(from, authors[k]);
                assertTrue(active, "listed stream inactive");
                assertEq(rates[k], enc, "allSubscriptions rates");
                assertEq(enc, handler.modelStream(from, authors[k]), "encodedRates vs model");
                uint256 inc = enc & type(uint96).max;
                uint256 out = (enc >> 96) & type(uint96).max;
                uint256 projectId = enc >> 192;
                assertLe(inc, out, "income <= outgoing");
                uint256 fee = out - inc;
                assertLe(fee * BPS, out * MAX_FEE, "fee above 20%");
                if (projectId == 0) assertEq(fee, 0, "no project, no fee");
                outgoing[i] += out;
                income[_indexOf(authors[k])] += inc;
                if (fee != 0) income[_indexOf(handler.modelProjectOwner(projectId))] += fee;
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
        for (uint256 i; i < 6; ++i) {
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
        bytes4[14] memory sel = [
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
            StreamPayHandler.setFee.selector,
            StreamPayHandler.subscribeMany.selector,
            StreamPayHandler.cycle.selector,
            StreamPayHandler.depositHuge.selector
        ];
        for (uint256 i; i < 200; ++i) {
            uint256 r = uint256(keccak256(abi.encode(i, "drive")));
            uint256 k = r % 15;
            if (k == 14) k = 3; // subscribe twice as often, as in setUp's selectors
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
        // one account fills its streams up to the cap and is refused the next one
        for (uint256 i; i < 3; ++i) {
            handler.subscribeMany(0, 60, i, 0);
        }
        // then time runs on, a full window at a time, with the late keeper at work: every stream
        // whose payer runs dry is liquidated (own operations leave two windows of cover, so a
        // random 200-call prefix alone rarely drains an account below one window)
        for (uint256 i; i < 12; ++i) {
            handler.warp(LIQUIDATION_WINDOW, i);
        }
        assertEq(handler.violations(), 0, handler.firstViolation());
        string[20] memory actions = [
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
            "wrongRelayerRejected",
            "subscribeMany",
            "streamCapRejected",
            "cycle",
            "depositHugeRejected"
        ];
        for (uint256 i; i < actions.length; ++i) {
            assertGt(handler.calls(actions[i]), 0, string.concat("never exercised: ", actions[i]));
        }
        assertGt(handler.ghostMetaCalls(), 20, "meta-transactions");
        assertEq(handler.ghostMaxStreams(), sp.maxStreams(), "an account reached the stream cap");
        assertGt(handler.ghostLateLiquidations(), 0, "the late keeper liquidated");
        assertGt(handler.ghostCrossAccountReplaysRejected(), 0, "replays as the other account of a key");
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
        uint256 i = _indexPlusOne[a];
        if (i != 0) return i - 1;
        revert("unknown account");
    }
}

/// @title InvariantHookToken18Test
/// @notice The same invariants on an 18-decimal token whose transfers call the recipient back
/// (the merchant tries to re-enter StreamPay on every withdrawal it receives), starting from an
/// empty deployment (no initial deposits), where v1 let a Permit2 deposit of 2^160 mint for free.
contract InvariantHookToken18Test is InvariantTest {
    function _deployment() internal override returns (address tokenAddr, bool empty) {
        HookToken ht = new HookToken();
        sp = new StreamPay(IERC20Metadata(address(ht)), IPermit2(address(permit2)), LIQUIDATION_WINDOW);
        vm.label(address(ht), "HOOK");
        vm.label(address(sp), "StreamPay(HOOK)");
        return (address(ht), true);
    }
}
