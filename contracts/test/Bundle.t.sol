// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {IStreamPay} from "../src/IStreamPay.sol";
import {Base} from "./utils/Base.sol";
import {Vm} from "./utils/Vm.sol";
import {SigUtils} from "./handlers/SigUtils.sol";

/// @title BundleTest
/// @notice `bundle(bytes[])`: many users' signed calls in one relayer transaction, each isolated.
contract BundleTest is Base {
    event BundleCallResult(uint256 indexed index, bool success, bytes revertData);

    function _signedPay(uint256 pk, uint256 nonceType, uint256 nonce, address to, uint256 amount, address onlyRelayer)
        internal
        view
        returns (bytes memory)
    {
        bytes memory data = abi.encodeCall(IStreamPay.pay, (to, amount));
        uint256 traits = SigUtils.traits(nonceType, block.timestamp + 1 hours, onlyRelayer, nonce);
        bytes memory sig = SigUtils.signCall(pk, address(sp), traits, data);
        return abi.encodeCall(IStreamPay.bySig, (vm.addr(pk), IStreamPay.SignedCall(traits, data), sig));
    }

    /// @dev alice's and carol's calls succeed although bob's, between them, fails; bob's nonce is
    /// not consumed (his call succeeds later with the same signature); one event per call, the
    /// failure carrying the exact custom error.
    function test_bundle_failingCallIsIsolatedAndKeepsItsNonce() public {
        _deposit(alice, 10e6);
        _deposit(bob, 1e6);
        _deposit(carol, 10e6);
        bytes[] memory calls = new bytes[](3);
        calls[0] = _signedPay(ALICE_PK, SigUtils.ACCOUNT, 0, dave, 2e18, address(0));
        calls[1] = _signedPay(BOB_PK, SigUtils.ACCOUNT, 0, dave, 5e18, relayer); // bob has 1
        calls[2] = _signedPay(CAROL_PK, SigUtils.UNIQUE, 99, dave, 3e18, relayer);

        vm.expectEmit(true, true, true, true, address(sp));
        emit BundleCallResult(0, true, "");
        vm.expectEmit(true, true, true, true, address(sp));
        emit BundleCallResult(
            1, false, abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, bob, 4e18, 0)
        );
        vm.expectEmit(true, true, true, true, address(sp));
        emit BundleCallResult(2, true, "");
        vm.prank(relayer, relayer);
        bool[] memory ok = sp.bundle(calls);

        assertTrue(ok[0] && !ok[1] && ok[2], "success flags");
        assertEq(sp.balanceOf(dave), 5e18, "alice's and carol's payments stand");
        assertEq(sp.balanceOf(bob), 1e18, "bob's failed payment changed nothing");
        assertEq(sp.bySigAccountNonces(alice), 1, "alice's nonce consumed");
        assertEq(sp.bySigAccountNonces(bob), 0, "bob's nonce NOT consumed");
        assertTrue(sp.bySigUniqueNonces(carol, 99), "carol's unique nonce consumed");

        // bob tops up; the same signature now goes through, in a bundle with a replay of alice's
        _deposit(bob, 10e6);
        bytes[] memory again = new bytes[](2);
        again[0] = calls[0];
        again[1] = calls[1];
        vm.expectEmit(true, true, true, true, address(sp));
        emit BundleCallResult(
            0, false, abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(0), uint256(0))
        );
        vm.expectEmit(true, true, true, true, address(sp));
        emit BundleCallResult(1, true, "");
        vm.prank(relayer, relayer);
        ok = sp.bundle(again);
        assertTrue(!ok[0] && ok[1]);
        assertEq(sp.balanceOf(dave), 10e18);
        assertEq(sp.bySigAccountNonces(bob), 1);
    }

    /// @dev The relayer stays the sender inside a bundle: a call restricted to it passes, one
    /// restricted to another relayer fails alone; a sponsored fee is paid to the relayer.
    function test_bundle_relayerIsTheSenderOfEveryCall() public {
        _deposit(alice, 10e6);
        _deposit(bob, 10e6);
        bytes memory inner = abi.encodeCall(IStreamPay.pay, (carol, 1e18));
        bytes memory sponsored = abi.encodeCall(IStreamPay.sponsoredCall, (address(sp), 0.1e18, inner, ""));
        uint256 traits = SigUtils.traits(SigUtils.ACCOUNT, block.timestamp + 1 hours, relayer, 0);
        bytes[] memory calls = new bytes[](2);
        calls[0] = abi.encodeCall(
            IStreamPay.bySig,
            (
                alice,
                IStreamPay.SignedCall(traits, sponsored),
                SigUtils.signCall(ALICE_PK, address(sp), traits, sponsored)
            )
        );
        calls[1] = _signedPay(BOB_PK, SigUtils.ACCOUNT, 0, carol, 1e18, dave); // for dave only
        vm.prank(relayer, relayer);
        bool[] memory ok = sp.bundle(calls);
        assertTrue(ok[0], "restricted to the bundling relayer");
        assertFalse(ok[1], "restricted to another relayer");
        assertEq(sp.balanceOf(relayer), 0.1e18, "sponsored fee to the relayer");
        assertEq(sp.balanceOf(carol), 1e18);
        assertEq(sp.bySigAccountNonces(bob), 0);
    }

    /// @dev Measurement, not a check: execution gas per relayed payment in bundles of 1, 10 and 50
    /// beside the same calls sent singly (each single call starts with StreamPay's slots cold, as
    /// its own transaction would). Full-transaction figures for the gas table come from
    /// scripts/gas-report.sh.
    function test_bundle_gasPerRelayedCall() public {
        uint256[3] memory sizes = [uint256(1), 10, 50];
        for (uint256 k; k < sizes.length; ++k) {
            uint256 n = sizes[k];
            bytes[] memory calls = new bytes[](n);
            for (uint256 i; i < n; ++i) {
                uint256 pk = 0x5000 + k * 100 + i;
                _deposit(vm.addr(pk), 10e6);
                calls[i] = _signedPay(pk, SigUtils.ACCOUNT, 0, dave, 1e18, address(0));
            }
            uint256 snap = vm.snapshotState();
            vm.cool(address(sp));
            uint256 g = gasleft();
            vm.prank(relayer, relayer);
            bool[] memory ok = sp.bundle(calls);
            uint256 bundled = g - gasleft();
            vm.revertToState(snap);
            uint256 single;
            for (uint256 i; i < n; ++i) {
                vm.cool(address(sp));
                g = gasleft();
                vm.prank(relayer, relayer);
                (bool s,) = address(sp).call(calls[i]);
                single += g - gasleft();
                assertTrue(s, "single call");
            }
            for (uint256 i; i < n; ++i) {
                assertTrue(ok[i], "bundled call");
            }
            emit log_named_uint(string.concat("bundle of ", vm.toString(n), ": execution gas per call"), bundled / n);
            emit log_named_uint(string.concat("  single calls, execution gas per call"), single / n);
        }
    }

    event log_named_uint(string key, uint256 val);
}
