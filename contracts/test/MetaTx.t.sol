// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {IPermit2} from "@1inch/solidity-utils/contracts/interfaces/IPermit2.sol";

import {Base} from "./utils/Base.sol";
import {StreamPay} from "../src/StreamPay.sol";
import {IStreamPay} from "../src/IStreamPay.sol";
import {SigUtils} from "./handlers/SigUtils.sol";
import {ERC1271Wallet} from "./mocks/ERC1271Wallet.sol";

/// @title MetaTxTest
/// @notice bySig (1inch BySig-compatible meta-transactions), its nonces, deadline, relayer
/// restriction and signature checks; ERC-1271 signers; permitAndCall; sponsoredCall; multicall.
/// Every digest is computed here from the EIP-712 formula (SigUtils), never taken from the contract.
contract MetaTxTest is Base {
    uint256 internal constant ONE = 1e18; // one token in internal (18-decimal) units
    uint256 internal constant DEADLINE_IN = 1 hours;

    // =====================================================================================
    // helpers
    // =====================================================================================

    function _deadline() internal view returns (uint256) {
        return block.timestamp + DEADLINE_IN;
    }

    function _call(uint256 traits, bytes memory data) internal pure returns (IStreamPay.SignedCall memory) {
        return IStreamPay.SignedCall(traits, data);
    }

    /// @dev `pk` signs `data` for `sp` with an account nonce, any relayer, a 1-hour deadline.
    function _signed(uint256 pk, uint256 nonce, bytes memory data)
        internal
        view
        returns (IStreamPay.SignedCall memory c, bytes memory sig)
    {
        c = _call(SigUtils.traits(SigUtils.ACCOUNT, _deadline(), address(0), nonce), data);
        sig = SigUtils.signCall(pk, address(sp), c.traits, data);
    }

    function _relay(address signer, IStreamPay.SignedCall memory c, bytes memory sig) internal returns (bytes memory) {
        vm.prank(relayer, relayer);
        return sp.bySig(signer, c, sig);
    }

    function _relayExpectRevert(address signer, IStreamPay.SignedCall memory c, bytes memory sig, bytes memory err)
        internal
    {
        vm.prank(relayer, relayer);
        vm.expectRevert(err);
        sp.bySig(signer, c, sig);
    }

    function _bal(address a) internal view returns (int256) {
        return sp.signedBalanceOf(a);
    }

    function _i(uint256 x) internal pure returns (int256) {
        return int256(x);
    }

    // =====================================================================================
    // EIP-712 encoding
    // =====================================================================================

    function test_hashBySig_equalsIndependentEip712Digest() public view {
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 5 * ONE));
        uint256 traits = SigUtils.traits(SigUtils.UNIQUE, 123456789, address(0xBEEF), 42);
        IStreamPay.SignedCall memory c = _call(traits, data);
        bytes32 expected = keccak256(
            abi.encodePacked(
                hex"1901",
                keccak256(
                    abi.encode(
                        keccak256("EIP712Domain(string name,string version,uint256 chainId,address verifyingContract)"),
                        keccak256("StreamPay"),
                        keccak256("1"),
                        block.chainid,
                        address(sp)
                    )
                ),
                keccak256(
                    abi.encode(
                        keccak256("SignedCall(address signer,uint256 traits,bytes data)"), alice, traits, keccak256(data)
                    )
                )
            )
        );
        assertEq(sp.hashBySig(alice, c), expected, "hashBySig");
        assertEq(SigUtils.bySigDigest(address(sp), block.chainid, alice, traits, data), expected, "SigUtils digest");
        // traits layout, bit by bit
        assertEq(traits >> 254, 2, "nonce type bits");
        assertEq((traits >> 208) & (2 ** 40 - 1), 123456789, "deadline bits");
        assertEq((traits >> 128) & (2 ** 80 - 1), 0xBEEF, "relayer bits");
        assertEq(traits & (2 ** 128 - 1), 42, "nonce bits");
    }

    function test_eip712Domain_isStreamPayV1OfThisDeployment() public view {
        (
            bytes1 fields,
            string memory name_,
            string memory version,
            uint256 chainId,
            address verifyingContract,
            bytes32 salt,
            uint256[] memory extensions
        ) = sp.eip712Domain();
        assertEq(uint256(uint8(fields)), 0x0f, "fields: name, version, chainId, verifyingContract");
        assertEq(name_, "StreamPay");
        assertEq(version, "1");
        assertEq(chainId, block.chainid);
        assertEq(verifyingContract, address(sp));
        assertEq(salt, bytes32(0));
        assertEq(extensions.length, 0);
    }

    // =====================================================================================
    // a valid bySig executes as the signer
    // =====================================================================================

    function test_bySig_subscribe_executesAsSigner() public {
        _deposit(alice, 1000e6);
        uint96 rate = 3_858_024_691_358; // ~$10 per 30 days
        bytes memory data = abi.encodeCall(IStreamPay.subscribe, (bob, rate, 0));
        (IStreamPay.SignedCall memory c, bytes memory sig) = _signed(ALICE_PK, 0, data);

        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 0, bytes4(0), 0);
        vm.expectEmit(true, true, true, true, address(sp));
        emit StreamCreated(alice, bob, uint256(rate) + uint256(rate) * 2 ** 96);
        _relay(alice, c, sig);

        (bool active, uint256 encoded) = sp.subscriptions(alice, bob);
        assertTrue(active, "alice streams to bob");
        assertEq(encoded, uint256(rate) + uint256(rate) * 2 ** 96, "encoded rates");
        (,, uint256 aliceOut,) = sp.accountInfo(alice);
        (, uint256 bobIn,,) = sp.accountInfo(bob);
        assertEq(aliceOut, rate, "alice outgoing");
        assertEq(bobIn, rate, "bob income");
        (bool relayerStreams,) = sp.subscriptions(relayer, bob);
        assertFalse(relayerStreams, "the relayer did not subscribe");
        (,, uint256 relayerOut,) = sp.accountInfo(relayer);
        assertEq(relayerOut, 0);
        assertEq(sp.bySigAccountNonces(alice), 1, "alice's next nonce");
        assertEq(sp.bySigAccountNonces(relayer), 0, "relayer's nonce untouched");
    }

    function test_bySig_pay_executesAsSigner() public {
        _deposit(alice, 100e6);
        _deposit(relayer, 7e6);
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 40 * ONE));
        (IStreamPay.SignedCall memory c, bytes memory sig) = _signed(ALICE_PK, 0, data);

        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, bob, 40 * ONE);
        _relay(alice, c, sig);

        assertEq(_bal(alice), _i(60 * ONE), "alice paid");
        assertEq(_bal(bob), _i(40 * ONE), "bob received");
        assertEq(_bal(relayer), _i(7 * ONE), "relayer's balance untouched");
        assertEq(sp.totalSupply(), 107 * ONE);
    }

    function test_bySig_deposit_pullsFromSigner() public {
        _deposit(relayer, 1e6); // the relayer also has tokens approved: they must not be used
        uint256 aliceTokens = token.balanceOf(alice);
        uint256 relayerTokens = token.balanceOf(relayer);
        bytes memory data = abi.encodeCall(IStreamPay.deposit, (25e6, false));
        (IStreamPay.SignedCall memory c, bytes memory sig) = _signed(ALICE_PK, 0, data);

        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(address(0), alice, 25 * ONE);
        _relay(alice, c, sig);

        assertEq(token.balanceOf(alice), aliceTokens - 25e6, "alice's tokens pulled");
        assertEq(token.balanceOf(relayer), relayerTokens, "relayer's tokens untouched");
        assertEq(token.balanceOf(address(sp)), 26e6);
        assertEq(_bal(alice), _i(25 * ONE));
        assertEq(_bal(relayer), _i(1 * ONE));
    }

    function test_bySig_withdraw_sendsToSigner() public {
        _deposit(alice, 50e6);
        uint256 aliceTokens = token.balanceOf(alice);
        uint256 relayerTokens = token.balanceOf(relayer);
        bytes memory data = abi.encodeCall(IStreamPay.withdraw, (20 * ONE));
        (IStreamPay.SignedCall memory c, bytes memory sig) = _signed(ALICE_PK, 0, data);

        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, address(0), 20 * ONE);
        _relay(alice, c, sig);

        assertEq(token.balanceOf(alice), aliceTokens + 20e6, "tokens to alice");
        assertEq(token.balanceOf(relayer), relayerTokens, "nothing to the relayer");
        assertEq(_bal(alice), _i(30 * ONE));
        assertEq(sp.totalSupply(), 30 * ONE);
    }

    function test_bySig_returnsTheCallsReturnData() public {
        bytes memory data = abi.encodeCall(IStreamPay.claimProjectId, ());
        (IStreamPay.SignedCall memory c, bytes memory sig) = _signed(ALICE_PK, 0, data);
        bytes memory ret = _relay(alice, c, sig);
        assertEq(abi.decode(ret, (uint256)), 1, "first project id");
        assertEq(sp.projectOwner(1), alice, "owned by the signer, not the relayer");
    }

    /// @dev The signer context ends with the bySig call: a later direct call acts as its sender.
    function test_bySig_signerContextDoesNotLeak() public {
        _deposit(alice, 10e6);
        _deposit(bob, 10e6);
        (IStreamPay.SignedCall memory c, bytes memory sig) =
            _signed(ALICE_PK, 0, abi.encodeCall(IStreamPay.pay, (carol, 1 * ONE)));
        _relay(alice, c, sig);
        vm.prank(bob);
        sp.pay(carol, 2 * ONE);
        assertEq(_bal(alice), _i(9 * ONE));
        assertEq(_bal(bob), _i(8 * ONE));
        assertEq(_bal(carol), _i(3 * ONE));
    }

    function testFuzz_bySig_pay(uint256 deposit_, uint256 amount, uint256 nonceType, uint128 nonce) public {
        deposit_ = bound(deposit_, 1, 1e15);
        amount = bound(amount, 1, deposit_ * SCALE);
        nonceType = bound(nonceType, 0, 2);
        if (nonceType != SigUtils.UNIQUE) nonce = 0;
        _deposit(alice, deposit_);
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, amount));
        IStreamPay.SignedCall memory c = _call(SigUtils.traits(nonceType, _deadline(), address(0), nonce), data);
        bytes memory sig = SigUtils.signCall(ALICE_PK, address(sp), c.traits, data);
        _relay(alice, c, sig);
        assertEq(_bal(alice), _i(deposit_ * SCALE - amount));
        assertEq(_bal(bob), _i(amount));
        _relayExpectRevert(
            alice,
            c,
            sig,
            abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(nonceType), uint256(nonce))
        );
    }

    // =====================================================================================
    // replay, deadline, chain, deployment, relayer, signer
    // =====================================================================================

    function test_bySig_replay_revertsWrongNonce() public {
        _deposit(alice, 100e6);
        (IStreamPay.SignedCall memory c, bytes memory sig) =
            _signed(ALICE_PK, 0, abi.encodeCall(IStreamPay.pay, (bob, 10 * ONE)));
        _relay(alice, c, sig);
        _relayExpectRevert(
            alice, c, sig, abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(0), uint256(0))
        );
        // a different relayer, a later block: still rejected
        vm.warp(block.timestamp + 60);
        vm.prank(carol, carol);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(0), uint256(0)));
        sp.bySig(alice, c, sig);
        assertEq(_bal(alice), _i(90 * ONE), "paid exactly once");
        assertEq(_bal(bob), _i(10 * ONE));
    }

    /// @dev An account nonce ahead of the next one is rejected too (account nonces are sequential).
    function test_bySig_futureAccountNonce_revertsWrongNonce() public {
        _deposit(alice, 100e6);
        (IStreamPay.SignedCall memory c, bytes memory sig) =
            _signed(ALICE_PK, 1, abi.encodeCall(IStreamPay.pay, (bob, 10 * ONE)));
        _relayExpectRevert(
            alice, c, sig, abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(0), uint256(1))
        );
    }

    function test_bySig_expiredDeadline_revertsDeadlineExceeded() public {
        _deposit(alice, 100e6);
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 10 * ONE));
        uint256 deadline = block.timestamp + 100;
        IStreamPay.SignedCall memory c = _call(SigUtils.traits(SigUtils.ACCOUNT, deadline, address(0), 0), data);
        bytes memory sig = SigUtils.signCall(ALICE_PK, address(sp), c.traits, data);

        vm.warp(deadline + 1);
        _relayExpectRevert(
            alice, c, sig, abi.encodeWithSelector(IStreamPay.StreamPayDeadlineExceeded.selector, deadline, deadline + 1)
        );
        // the deadline itself is still valid
        vm.warp(deadline);
        _relay(alice, c, sig);
        assertEq(_bal(bob), _i(10 * ONE));
    }

    function test_bySig_deadlineInThePast_revertsDeadlineExceeded() public {
        bytes memory data = abi.encodeCall(IStreamPay.claimProjectId, ());
        uint256 deadline = block.timestamp - 1;
        IStreamPay.SignedCall memory c = _call(SigUtils.traits(SigUtils.ACCOUNT, deadline, address(0), 0), data);
        bytes memory sig = SigUtils.signCall(ALICE_PK, address(sp), c.traits, data);
        _relayExpectRevert(
            alice,
            c,
            sig,
            abi.encodeWithSelector(IStreamPay.StreamPayDeadlineExceeded.selector, deadline, block.timestamp)
        );
    }

    function test_bySig_signedForAnotherChain_revertsWrongSignature() public {
        _deposit(alice, 100e6);
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 10 * ONE));
        uint256 traits = SigUtils.traits(SigUtils.ACCOUNT, _deadline(), address(0), 0);
        uint256 here = block.chainid;

        // signed for chain 1, submitted here
        bytes memory sigOther = SigUtils.sign(ALICE_PK, SigUtils.bySigDigest(address(sp), 1, alice, traits, data));
        _relayExpectRevert(
            alice,
            _call(traits, data),
            sigOther,
            abi.encodeWithSelector(IStreamPay.StreamPayWrongSignature.selector, alice)
        );

        // signed here, submitted after the chain id changed (a fork)
        bytes memory sigHere = SigUtils.sign(ALICE_PK, SigUtils.bySigDigest(address(sp), here, alice, traits, data));
        vm.chainId(here + 1);
        _relayExpectRevert(
            alice,
            _call(traits, data),
            sigHere,
            abi.encodeWithSelector(IStreamPay.StreamPayWrongSignature.selector, alice)
        );
        // ... and the signature for the new chain id is the one accepted there
        bytes memory sigNew = SigUtils.sign(ALICE_PK, SigUtils.bySigDigest(address(sp), here + 1, alice, traits, data));
        _relay(alice, _call(traits, data), sigNew);
        assertEq(_bal(bob), _i(10 * ONE));
    }

    function test_bySig_signedForAnotherDeployment_revertsWrongSignature() public {
        StreamPay other = new StreamPay(IERC20Metadata(address(token)), IPermit2(address(permit2)), LIQUIDATION_WINDOW);
        _deposit(alice, 100e6);
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 10 * ONE));
        uint256 traits = SigUtils.traits(SigUtils.ACCOUNT, _deadline(), address(0), 0);
        bytes memory sigForOther = SigUtils.signCall(ALICE_PK, address(other), traits, data);

        _relayExpectRevert(
            alice,
            _call(traits, data),
            sigForOther,
            abi.encodeWithSelector(IStreamPay.StreamPayWrongSignature.selector, alice)
        );
        assertEq(sp.bySigAccountNonces(alice), 0, "a rejected call consumes no nonce");

        // the signature is valid where it was meant to be used
        vm.prank(alice);
        token.approve(address(other), type(uint256).max);
        vm.prank(alice);
        other.deposit(10e6, false);
        vm.prank(relayer);
        other.bySig(alice, _call(traits, data), sigForOther);
        assertEq(other.signedBalanceOf(bob), _i(10 * ONE));
        assertEq(_bal(bob), 0);
    }

    function test_bySig_relayerRestricted_otherRelayerReverts_rightRelayerSucceeds() public {
        _deposit(alice, 100e6);
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 10 * ONE));
        IStreamPay.SignedCall memory c = _call(SigUtils.traits(SigUtils.ACCOUNT, _deadline(), relayer, 0), data);
        bytes memory sig = SigUtils.signCall(ALICE_PK, address(sp), c.traits, data);

        vm.prank(carol, carol);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayWrongRelayer.selector, carol));
        sp.bySig(alice, c, sig);

        // only the low 80 bits are compared: an address differing there is rejected...
        address nearMiss = address(uint160(relayer) ^ 1);
        vm.prank(nearMiss, nearMiss);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayWrongRelayer.selector, nearMiss));
        sp.bySig(alice, c, sig);

        _relay(alice, c, sig);
        assertEq(_bal(bob), _i(10 * ONE));
        assertEq(_bal(alice), _i(90 * ONE));
    }

    /// @dev 1inch semantics: the relayer field holds the low 80 bits of the relayer's address, so an
    /// address sharing them (different high 80 bits) is accepted. Documented, not a bug.
    function test_bySig_relayerRestriction_comparesLow80BitsOnly() public {
        _deposit(alice, 100e6);
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 10 * ONE));
        IStreamPay.SignedCall memory c = _call(SigUtils.traits(SigUtils.ACCOUNT, _deadline(), relayer, 0), data);
        bytes memory sig = SigUtils.signCall(ALICE_PK, address(sp), c.traits, data);
        address sameLowBits = address(uint160(relayer) ^ (uint160(1) << 100));
        vm.prank(sameLowBits, sameLowBits);
        sp.bySig(alice, c, sig);
        assertEq(_bal(bob), _i(10 * ONE));
    }

    function test_bySig_wrongSigner_revertsWrongSignature() public {
        _deposit(alice, 100e6);
        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 10 * ONE));
        IStreamPay.SignedCall memory c = _call(SigUtils.traits(SigUtils.ACCOUNT, _deadline(), address(0), 0), data);
        bytes memory bobSig = SigUtils.signCall(BOB_PK, address(sp), c.traits, data);
        _relayExpectRevert(alice, c, bobSig, abi.encodeWithSelector(IStreamPay.StreamPayWrongSignature.selector, alice));

        // a signature over different data (the relayer changed the amount) is rejected too
        bytes memory aliceSig = SigUtils.signCall(ALICE_PK, address(sp), c.traits, data);
        IStreamPay.SignedCall memory tampered = _call(c.traits, abi.encodeCall(IStreamPay.pay, (bob, 11 * ONE)));
        _relayExpectRevert(
            alice, tampered, aliceSig, abi.encodeWithSelector(IStreamPay.StreamPayWrongSignature.selector, alice)
        );
        // ... and so are tampered traits (another relayer restriction)
        IStreamPay.SignedCall memory otherTraits = _call(SigUtils.traits(SigUtils.ACCOUNT, _deadline(), carol, 0), data);
        vm.prank(carol, carol);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayWrongSignature.selector, alice));
        sp.bySig(alice, otherTraits, aliceSig);
        // ... and a malformed signature
        _relayExpectRevert(
            alice,
            c,
            bytes.concat(aliceSig, hex"00"),
            abi.encodeWithSelector(IStreamPay.StreamPayWrongSignature.selector, alice)
        );
        assertEq(_bal(alice), _i(100 * ONE));
        assertEq(sp.bySigAccountNonces(alice), 0);
    }

    // =====================================================================================
    // nonce types
    // =====================================================================================

    function test_bySig_selectorNonces_independentPerSelector() public {
        _deposit(alice, 100e6);
        bytes memory pay1 = abi.encodeCall(IStreamPay.pay, (bob, 1 * ONE));
        bytes memory pay2 = abi.encodeCall(IStreamPay.pay, (bob, 2 * ONE));
        bytes memory sub = abi.encodeCall(IStreamPay.subscribe, (carol, 1e9, 0));
        uint256 d = _deadline();
        IStreamPay.SignedCall memory c1 = _call(SigUtils.traits(SigUtils.SELECTOR, d, address(0), 0), pay1);
        IStreamPay.SignedCall memory c2 = _call(SigUtils.traits(SigUtils.SELECTOR, d, address(0), 1), pay2);
        IStreamPay.SignedCall memory c3 = _call(SigUtils.traits(SigUtils.SELECTOR, d, address(0), 0), sub);
        bytes memory s1 = SigUtils.signCall(ALICE_PK, address(sp), c1.traits, pay1);
        bytes memory s2 = SigUtils.signCall(ALICE_PK, address(sp), c2.traits, pay2);
        bytes memory s3 = SigUtils.signCall(ALICE_PK, address(sp), c3.traits, sub);

        // pay nonce 1 before nonce 0: rejected (selector nonces are sequential)
        _relayExpectRevert(
            alice, c2, s2, abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(1), uint256(1))
        );

        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 1, IStreamPay.pay.selector, 0);
        _relay(alice, c1, s1);
        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 1, IStreamPay.pay.selector, 1);
        _relay(alice, c2, s2);
        // subscribe has its own counter, still at 0
        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 1, IStreamPay.subscribe.selector, 0);
        _relay(alice, c3, s3);

        assertEq(sp.bySigSelectorNonces(alice, IStreamPay.pay.selector), 2);
        assertEq(sp.bySigSelectorNonces(alice, IStreamPay.subscribe.selector), 1);
        assertEq(sp.bySigSelectorNonces(alice, IStreamPay.withdraw.selector), 0);
        assertEq(sp.bySigAccountNonces(alice), 0, "account nonce untouched");
        assertEq(_bal(bob), _i(3 * ONE));
        (bool active,) = sp.subscriptions(alice, carol);
        assertTrue(active);

        _relayExpectRevert(
            alice, c1, s1, abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(1), uint256(0))
        );
        _relayExpectRevert(
            alice, c3, s3, abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(1), uint256(0))
        );
    }

    function test_bySig_uniqueNonces_anyOrderButNeverTwice() public {
        _deposit(alice, 100e6);
        uint256 d = _deadline();
        uint256[4] memory nonces = [uint256(777), 1, 257, type(uint128).max];
        IStreamPay.SignedCall[4] memory calls;
        bytes[4] memory sigs;
        for (uint256 i; i < 4; ++i) {
            bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, (i + 1) * ONE));
            calls[i] = _call(SigUtils.traits(SigUtils.UNIQUE, d, address(0), nonces[i]), data);
            sigs[i] = SigUtils.signCall(ALICE_PK, address(sp), calls[i].traits, data);
        }
        for (uint256 i; i < 4; ++i) {
            assertFalse(sp.bySigUniqueNonces(alice, nonces[i]), "unused before");
            vm.expectEmit(true, true, true, true, address(sp));
            emit NonceUsed(alice, 2, bytes4(0), nonces[i]);
            _relay(alice, calls[i], sigs[i]);
            assertTrue(sp.bySigUniqueNonces(alice, nonces[i]), "used after");
        }
        // neighbours in the same bitmap word, and the same bit of another word, stay unused
        assertFalse(sp.bySigUniqueNonces(alice, 776));
        assertFalse(sp.bySigUniqueNonces(alice, 778));
        assertFalse(sp.bySigUniqueNonces(alice, 513));
        assertFalse(sp.bySigUniqueNonces(alice, 0));
        assertFalse(sp.bySigUniqueNonces(bob, 777), "per signer");
        assertEq(_bal(bob), _i(10 * ONE));
        assertEq(sp.bySigAccountNonces(alice), 0, "account nonce untouched");

        for (uint256 i; i < 4; ++i) {
            _relayExpectRevert(
                alice,
                calls[i],
                sigs[i],
                abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(2), nonces[i])
            );
        }
        // the same unique nonce with other data is rejected as well: it is spent
        bytes memory other = abi.encodeCall(IStreamPay.pay, (carol, ONE));
        IStreamPay.SignedCall memory c = _call(SigUtils.traits(SigUtils.UNIQUE, d, address(0), 777), other);
        _relayExpectRevert(
            alice,
            c,
            SigUtils.signCall(ALICE_PK, address(sp), c.traits, other),
            abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(2), uint256(777))
        );
    }

    function test_bySig_nonceType3_revertsWrongNonceType() public {
        bytes memory data = abi.encodeCall(IStreamPay.claimProjectId, ());
        IStreamPay.SignedCall memory c = _call(SigUtils.traits(3, _deadline(), address(0), 0), data);
        bytes memory sig = SigUtils.signCall(ALICE_PK, address(sp), c.traits, data);
        _relayExpectRevert(alice, c, sig, abi.encodeWithSelector(IStreamPay.StreamPayWrongNonceType.selector, 3));
        assertEq(sp.projectOwner(1), address(0));
    }

    function test_bySig_accountNonce_emitsNonceUsedEachTime() public {
        _deposit(alice, 100e6);
        for (uint256 n; n < 3; ++n) {
            (IStreamPay.SignedCall memory c, bytes memory sig) =
                _signed(ALICE_PK, n, abi.encodeCall(IStreamPay.pay, (bob, ONE)));
            vm.expectEmit(true, true, true, true, address(sp));
            emit NonceUsed(alice, 0, bytes4(0), n);
            _relay(alice, c, sig);
            assertEq(sp.bySigAccountNonces(alice), n + 1);
        }
    }

    function test_useBySigAccountNonce_cancelsSignedCall() public {
        _deposit(alice, 100e6);
        (IStreamPay.SignedCall memory c, bytes memory sig) =
            _signed(ALICE_PK, 0, abi.encodeCall(IStreamPay.pay, (bob, 10 * ONE)));

        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 0, bytes4(0), 0);
        vm.prank(alice);
        sp.useBySigAccountNonce(1);
        assertEq(sp.bySigAccountNonces(alice), 1);

        _relayExpectRevert(
            alice, c, sig, abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, alice, uint8(0), uint256(0))
        );
        assertEq(_bal(bob), 0, "cancelled call never ran");

        // skipping several: the event names the last nonce consumed
        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 0, bytes4(0), 5);
        vm.prank(alice);
        sp.useBySigAccountNonce(5);
        assertEq(sp.bySigAccountNonces(alice), 6);

        vm.prank(alice);
        vm.expectRevert(IStreamPay.StreamPayZeroAmount.selector);
        sp.useBySigAccountNonce(0);
    }

    /// @dev useBySigAccountNonce itself can be signed: a relayer cancels on the signer's behalf.
    function test_useBySigAccountNonce_viaBySig_cancelsTheSignersNonces() public {
        (IStreamPay.SignedCall memory c, bytes memory sig) =
            _signed(ALICE_PK, 0, abi.encodeCall(IStreamPay.useBySigAccountNonce, (uint32(4))));
        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 0, bytes4(0), 0);
        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 0, bytes4(0), 4);
        _relay(alice, c, sig);
        assertEq(sp.bySigAccountNonces(alice), 5);
        assertEq(sp.bySigAccountNonces(relayer), 0);
    }

    // =====================================================================================
    // ERC-1271
    // =====================================================================================

    function test_bySig_erc1271WalletCanSign() public {
        ERC1271Wallet wallet = new ERC1271Wallet(dave);
        vm.prank(alice);
        sp.depositFor(50e6, address(wallet), false);
        assertEq(_bal(address(wallet)), _i(50 * ONE));

        bytes memory data = abi.encodeCall(IStreamPay.pay, (bob, 20 * ONE));
        IStreamPay.SignedCall memory c = _call(SigUtils.traits(SigUtils.ACCOUNT, _deadline(), address(0), 0), data);

        // a key other than the wallet owner's is refused by the wallet
        bytes memory carolSig = SigUtils.signCallAs(CAROL_PK, address(wallet), address(sp), c.traits, data);
        _relayExpectRevert(
            address(wallet),
            c,
            carolSig,
            abi.encodeWithSelector(IStreamPay.StreamPayWrongSignature.selector, address(wallet))
        );

        bytes memory daveSig = SigUtils.signCallAs(DAVE_PK, address(wallet), address(sp), c.traits, data);
        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(address(wallet), 0, bytes4(0), 0);
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(address(wallet), bob, 20 * ONE);
        _relay(address(wallet), c, daveSig);

        assertEq(_bal(address(wallet)), _i(30 * ONE), "the wallet paid");
        assertEq(_bal(bob), _i(20 * ONE));
        assertEq(_bal(dave), 0, "the wallet's owner is not the payer");
        assertEq(sp.bySigAccountNonces(address(wallet)), 1);
        assertEq(sp.bySigAccountNonces(dave), 0);

        // replayed: rejected like any other signer's
        _relayExpectRevert(
            address(wallet),
            c,
            daveSig,
            abi.encodeWithSelector(IStreamPay.StreamPayWrongNonce.selector, address(wallet), uint8(0), uint256(0))
        );
    }

    // =====================================================================================
    // permitAndCall: a token-only user deposits without ETH
    // =====================================================================================

    function _tokenOnlyUser(uint256 tokens) internal returns (address user, uint256 pk) {
        (user, pk) = _newUser("tokenOnly");
        token.mint(user, tokens);
        vm.deal(user, 0);
        assertEq(user.balance, 0, "no ETH");
        assertEq(token.allowance(user, address(sp)), 0, "no approval");
    }

    function test_permitAndCall_tokenOnlyUser_depositsInOneRelayedTx() public {
        (address user, uint256 pk) = _tokenOnlyUser(80e6);
        uint256 amount = 75e6;
        bytes memory permit = SigUtils.encodePermit(pk, "USD Coin", address(token), address(sp), amount, 0, _deadline());
        bytes memory data = abi.encodeCall(IStreamPay.deposit, (amount, false));
        IStreamPay.SignedCall memory c = _call(SigUtils.traits(SigUtils.ACCOUNT, _deadline(), relayer, 0), data);
        bytes memory sig = SigUtils.signCall(pk, address(sp), c.traits, data);
        bytes memory action = abi.encodeCall(IStreamPay.bySig, (user, c, sig));

        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(user, 0, bytes4(0), 0);
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(address(0), user, amount * SCALE);
        vm.prank(relayer, relayer); // one transaction, sent and paid for by the relayer
        sp.permitAndCall(permit, action);

        assertEq(_bal(user), _i(amount * SCALE), "credited");
        assertEq(token.balanceOf(user), 5e6, "tokens pulled");
        assertEq(token.balanceOf(address(sp)), amount);
        assertEq(token.allowance(user, address(sp)), 0, "permit fully used");
        assertEq(token.nonces(user), 1, "permit consumed");
        assertEq(sp.bySigAccountNonces(user), 1);
        assertEq(user.balance, 0, "still no ETH");
        assertEq(_bal(relayer), 0);
    }

    function test_permitAndCall_frontRunPermit_doesNotBlockTheAction() public {
        (address user, uint256 pk) = _tokenOnlyUser(80e6);
        uint256 amount = 80e6;
        uint256 deadline = _deadline();
        bytes memory permit = SigUtils.encodePermit(pk, "USD Coin", address(token), address(sp), amount, 0, deadline);
        bytes memory data = abi.encodeCall(IStreamPay.deposit, (amount, false));
        (IStreamPay.SignedCall memory c, bytes memory sig) = _signedBy(pk, data);

        // a front-runner copies the permit from the mempool and submits it first
        (,,, uint256 pdl, uint8 v, bytes32 r, bytes32 s) =
            abi.decode(_slice(permit, 20), (address, address, uint256, uint256, uint8, bytes32, bytes32));
        vm.prank(carol);
        token.permit(user, address(sp), amount, pdl, v, r, s);
        assertEq(token.nonces(user), 1);

        vm.prank(relayer, relayer);
        sp.permitAndCall(permit, abi.encodeCall(IStreamPay.bySig, (user, c, sig)));
        assertEq(_bal(user), _i(amount * SCALE));
        assertEq(token.balanceOf(user), 0);
        assertEq(token.nonces(user), 1, "the relayer's permit failed silently");
    }

    /// @dev Without the permit (and no approval), the action fails on its own: the failure of the
    /// permit is ignored but not the missing allowance.
    function test_permitAndCall_invalidPermit_actionFailsOnMissingAllowance() public {
        (address user, uint256 pk) = _tokenOnlyUser(80e6);
        // permit signed by the wrong key
        bytes memory permit =
            SigUtils.encodePermit(CAROL_PK, "USD Coin", address(token), address(sp), 80e6, 0, _deadline());
        (IStreamPay.SignedCall memory c, bytes memory sig) =
            _signedBy(pk, abi.encodeCall(IStreamPay.deposit, (80e6, false)));
        vm.prank(relayer, relayer);
        vm.expectRevert(
            abi.encodeWithSignature("ERC20InsufficientAllowance(address,uint256,uint256)", address(sp), 0, 80e6)
        );
        sp.permitAndCall(permit, abi.encodeCall(IStreamPay.bySig, (user, c, sig)));
        assertEq(_bal(user), 0);
        assertEq(sp.bySigAccountNonces(user), 0);
    }

    function test_permitAndCall_unknownTarget_revertsUnsupportedPermit() public {
        bytes memory action = abi.encodeCall(IStreamPay.claimProjectId, ());
        bytes memory args = abi.encode(alice, address(sp), 1, _deadline(), uint8(27), bytes32(0), bytes32(0));
        address[3] memory targets = [address(0xBEEF), address(sp), address(0)];
        for (uint256 i; i < 3; ++i) {
            vm.prank(relayer);
            vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayUnsupportedPermit.selector, targets[i]));
            sp.permitAndCall(abi.encodePacked(targets[i], args), action);
        }
        assertEq(sp.projectOwner(1), address(0), "the action never ran");
    }

    /// @dev Permit2 path: a signed PermitSingle, then bySig(deposit(amount, true)).
    function test_permitAndCall_permit2_depositsViaBySig() public {
        (address user, uint256 pk) = _tokenOnlyUser(40e6);
        vm.prank(user);
        token.approve(address(permit2), type(uint256).max); // the one-time Permit2 approval
        uint256 amount = 40e6;
        IPermit2.PermitSingle memory ps = IPermit2.PermitSingle(
            IPermit2.PermitDetails(address(token), uint160(amount), uint48(block.timestamp + 1 days), 0),
            address(sp),
            _deadline()
        );
        bytes memory psig = SigUtils.sign(pk, permit2.hashPermitSingle(ps));
        bytes memory permit = abi.encodePacked(address(permit2), abi.encode(user, ps, psig));
        (IStreamPay.SignedCall memory c, bytes memory sig) =
            _signedBy(pk, abi.encodeCall(IStreamPay.deposit, (amount, true)));

        vm.prank(relayer, relayer);
        sp.permitAndCall(permit, abi.encodeCall(IStreamPay.bySig, (user, c, sig)));
        assertEq(_bal(user), _i(amount * SCALE));
        assertEq(token.balanceOf(user), 0);
        assertEq(token.balanceOf(address(sp)), amount);
        assertEq(uint256(permit2.allowance(user, address(token), address(sp)).amount), 0);
    }

    function _signedBy(uint256 pk, bytes memory data)
        internal
        view
        returns (IStreamPay.SignedCall memory c, bytes memory sig)
    {
        c = _call(SigUtils.traits(SigUtils.ACCOUNT, _deadline(), address(0), 0), data);
        sig = SigUtils.signCall(pk, address(sp), c.traits, data);
    }

    function _slice(bytes memory b, uint256 from) internal pure returns (bytes memory out) {
        out = new bytes(b.length - from);
        for (uint256 i; i < out.length; ++i) {
            out[i] = b[from + i];
        }
    }

    // =====================================================================================
    // sponsoredCall
    // =====================================================================================

    function test_sponsoredCall_insideBySig_chargesSignerToRelayer() public {
        _deposit(alice, 100e6);
        uint256 fee = 1.5e18;
        bytes memory inner = abi.encodeCall(IStreamPay.pay, (bob, 30 * ONE));
        bytes memory data = abi.encodeCall(IStreamPay.sponsoredCall, (address(sp), fee, inner, ""));
        (IStreamPay.SignedCall memory c, bytes memory sig) = _signed(ALICE_PK, 0, data);

        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, bob, 30 * ONE);
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, relayer, fee);
        vm.expectEmit(true, true, true, true, address(sp));
        emit SponsoredCallCharged(alice, relayer, fee);
        _relay(alice, c, sig);

        assertEq(_bal(alice), _i(100 * ONE - 30 * ONE - fee), "alice paid the payment and the fee");
        assertEq(_bal(bob), _i(30 * ONE));
        assertEq(_bal(relayer), _i(fee), "the transaction's sender earned the fee");
        assertEq(sp.totalSupply(), 100 * ONE);
    }

    function test_sponsoredCall_otherFeeToken_revertsUnsupportedFeeToken() public {
        _deposit(alice, 100e6);
        bytes memory inner = abi.encodeCall(IStreamPay.pay, (bob, 30 * ONE));
        bytes memory data = abi.encodeCall(IStreamPay.sponsoredCall, (address(token), 1e6, inner, ""));
        (IStreamPay.SignedCall memory c, bytes memory sig) = _signed(ALICE_PK, 0, data);
        _relayExpectRevert(
            alice, c, sig, abi.encodeWithSelector(IStreamPay.StreamPayUnsupportedFeeToken.selector, address(token))
        );
        vm.prank(alice);
        vm.expectRevert(abi.encodeWithSelector(IStreamPay.StreamPayUnsupportedFeeToken.selector, address(0)));
        sp.sponsoredCall(address(0), 0, inner, "");
        assertEq(_bal(alice), _i(100 * ONE));
        assertEq(_bal(bob), 0);
        assertEq(sp.bySigAccountNonces(alice), 0);
    }

    /// @dev A fee the signer cannot afford reverts the whole signed call, payment included.
    function test_sponsoredCall_unaffordableFee_revertsEverything() public {
        _deposit(alice, 100e6);
        bytes memory inner = abi.encodeCall(IStreamPay.pay, (bob, 90 * ONE));
        bytes memory data = abi.encodeCall(IStreamPay.sponsoredCall, (address(sp), 11 * ONE, inner, ""));
        (IStreamPay.SignedCall memory c, bytes memory sig) = _signed(ALICE_PK, 0, data);
        _relayExpectRevert(
            alice, c, sig, abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, 1 * ONE, 0)
        );
        assertEq(_bal(alice), _i(100 * ONE));
        assertEq(_bal(bob), 0);
        assertEq(_bal(relayer), 0);
        assertEq(sp.bySigAccountNonces(alice), 0);
    }

    /// @dev The fee is an own operation of the signer: with a stream running, payment plus fee must
    /// leave two windows of its outflow covered (2 * 86_400 * 1e12 = 172.8e15), not one wei less.
    function test_sponsoredCall_feeMustLeaveTwoWindowsOfCover() public {
        _deposit(alice, 100e6);
        vm.prank(alice);
        sp.subscribe(carol, 1e12, 0);
        uint256 cover = 2 * 1e12 * 1 days;
        uint256 fee = 1 * ONE;
        uint256 payment = 100 * ONE - cover - fee;

        bytes memory inner = abi.encodeCall(IStreamPay.pay, (bob, payment));
        // one wei more of fee: the fee's debit fails, and the payment is undone with it
        bytes memory data = abi.encodeCall(IStreamPay.sponsoredCall, (address(sp), fee + 1, inner, ""));
        (IStreamPay.SignedCall memory c, bytes memory sig) = _signed(ALICE_PK, 0, data);
        _relayExpectRevert(
            alice, c, sig, abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, 1, cover - 1)
        );
        assertEq(_bal(alice), _i(100 * ONE));
        assertEq(_bal(bob), 0);
        assertEq(sp.bySigAccountNonces(alice), 0);

        // only one window of cover left after the fee: still an insufficient balance
        data = abi.encodeCall(IStreamPay.sponsoredCall, (address(sp), fee + cover / 2, inner, ""));
        (c, sig) = _signed(ALICE_PK, 0, data);
        _relayExpectRevert(
            alice,
            c,
            sig,
            abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, cover / 2, cover / 2)
        );

        // exactly two windows left: charged
        data = abi.encodeCall(IStreamPay.sponsoredCall, (address(sp), fee, inner, ""));
        (c, sig) = _signed(ALICE_PK, 0, data);
        _relay(alice, c, sig);
        assertEq(_bal(alice), _i(cover));
        assertEq(_bal(bob), _i(payment));
        assertEq(_bal(relayer), _i(fee));
        assertFalse(sp.isLiquidatable(alice));
    }

    /// @dev Called directly, nobody is sponsored: the caller is not charged for paying itself.
    function test_sponsoredCall_direct_chargesNothing() public {
        _deposit(alice, 100e6);
        vm.prank(alice);
        sp.sponsoredCall(address(sp), 5 * ONE, abi.encodeCall(IStreamPay.pay, (bob, 10 * ONE)), "");
        assertEq(_bal(alice), _i(90 * ONE));
        assertEq(_bal(bob), _i(10 * ONE));
    }

    // =====================================================================================
    // multicall via bySig: all or nothing
    // =====================================================================================

    function _payBatch(uint256[] memory amounts, address[] memory to) internal pure returns (bytes memory) {
        bytes[] memory items = new bytes[](amounts.length);
        for (uint256 i; i < amounts.length; ++i) {
            items[i] = abi.encodeCall(IStreamPay.pay, (to[i], amounts[i]));
        }
        return abi.encodeCall(IStreamPay.multicall, (items));
    }

    function test_multicall_viaBySig_isAllOrNothing() public {
        _deposit(alice, 100e6);
        address[] memory to = new address[](3);
        (to[0], to[1], to[2]) = (bob, carol, dave);
        uint256[] memory amounts = new uint256[](3);
        (amounts[0], amounts[1], amounts[2]) = (30 * ONE, 30 * ONE, 50 * ONE);

        (IStreamPay.SignedCall memory bad, bytes memory badSig) = _signed(ALICE_PK, 0, _payBatch(amounts, to));
        // the third payment overdraws alice by 10: the whole batch reverts with its error
        _relayExpectRevert(
            alice,
            bad,
            badSig,
            abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, 10 * ONE, 0)
        );
        assertEq(_bal(alice), _i(100 * ONE), "alice unchanged");
        assertEq(_bal(bob), 0, "first payment undone");
        assertEq(_bal(carol), 0, "second payment undone");
        assertEq(_bal(dave), 0);
        assertEq(sp.bySigAccountNonces(alice), 0, "nonce not consumed");

        // the first item failing reverts everything too
        (amounts[0], amounts[1], amounts[2]) = (101 * ONE, 1 * ONE, 1 * ONE);
        (IStreamPay.SignedCall memory bad2, bytes memory badSig2) = _signed(ALICE_PK, 0, _payBatch(amounts, to));
        _relayExpectRevert(
            alice,
            bad2,
            badSig2,
            abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, 1 * ONE, 0)
        );

        (amounts[0], amounts[1], amounts[2]) = (30 * ONE, 30 * ONE, 40 * ONE);
        (IStreamPay.SignedCall memory good, bytes memory goodSig) = _signed(ALICE_PK, 0, _payBatch(amounts, to));
        vm.expectEmit(true, true, true, true, address(sp));
        emit NonceUsed(alice, 0, bytes4(0), 0);
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, bob, 30 * ONE);
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, carol, 30 * ONE);
        vm.expectEmit(true, true, true, true, address(sp));
        emit Transfer(alice, dave, 40 * ONE);
        _relay(alice, good, goodSig);
        assertEq(_bal(alice), 0);
        assertEq(_bal(bob), _i(30 * ONE));
        assertEq(_bal(carol), _i(30 * ONE));
        assertEq(_bal(dave), _i(40 * ONE));
        assertEq(sp.bySigAccountNonces(alice), 1, "one nonce for the whole batch");
    }

    /// @dev A batch mixing a subscribe and payments: a failing payment also undoes the subscribe.
    function test_multicall_viaBySig_failureUndoesSubscribeToo() public {
        _deposit(alice, 100e6);
        bytes[] memory items = new bytes[](2);
        items[0] = abi.encodeCall(IStreamPay.subscribe, (bob, 1e12, 0)); // needs 2 * 1e12 * 1 day = 172.8e15
        items[1] = abi.encodeCall(IStreamPay.pay, (carol, 100 * ONE)); // leaves nothing to cover it
        (IStreamPay.SignedCall memory c, bytes memory sig) =
            _signed(ALICE_PK, 0, abi.encodeCall(IStreamPay.multicall, (items)));
        _relayExpectRevert(
            alice,
            c,
            sig,
            abi.encodeWithSelector(IStreamPay.StreamPayInsufficientBalance.selector, alice, 2 * 1e12 * 1 days, 0)
        );
        (bool active,) = sp.subscriptions(alice, bob);
        assertFalse(active, "subscribe undone");
        (, uint256 bobIn,,) = sp.accountInfo(bob);
        assertEq(bobIn, 0);
        assertEq(_bal(carol), 0);
        assertEq(_bal(alice), _i(100 * ONE));
    }
}
