// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {IERC20Metadata} from "@openzeppelin/contracts/token/ERC20/extensions/IERC20Metadata.sol";
import {IPermit2} from "@1inch/solidity-utils/contracts/interfaces/IPermit2.sol";

import {StreamPay} from "../../src/StreamPay.sol";
import {IStreamPay} from "../../src/IStreamPay.sol";
import {MockToken} from "../../src/MockToken.sol";
import {MockPermit2} from "./MockPermit2.sol";
import {Vm} from "./Vm.sol";

/// @title Base
/// @notice Shared fixture of the StreamPay tests (forge-std is not vendored): cheatcodes, assertions,
/// `bound`, the invariant-target hooks forge reads, and a deployment of a 6-decimal MockToken, a
/// MockPermit2 and StreamPay with funded users. Other test files depend on this API: only add to it.
abstract contract Base {
    Vm internal constant vm = Vm(address(uint160(uint256(keccak256("hevm cheat code")))));

    // ---------------------------------------------------------------- fixture constants
    /// @dev Seconds of net outflow an account must cover (the StreamPay constructor argument).
    uint256 internal constant LIQUIDATION_WINDOW = 1 days;
    /// @dev Windows of net outflow an account's OWN operations (subscribe, pay, withdraw, a
    /// sponsored fee) must leave it able to cover; it becomes liquidatable only below ONE window.
    uint256 internal constant OPERATING_WINDOWS = 2;
    /// @dev 18 - 6: internal units per token unit of the 6-decimal mock token.
    uint256 internal constant SCALE = 1e12;
    /// @dev Timestamp every test starts at (so `updated` values are realistic, never 0 or 1).
    uint256 internal constant START = 1_700_000_000;
    /// @dev Token base units each fixture user holds after setUp (1,000,000 USDC-like).
    uint256 internal constant INITIAL_TOKENS = 1_000_000e6;
    uint16 internal constant MAX_FEE = 2000;
    uint256 internal constant BPS = 10_000;

    uint256 internal constant ALICE_PK = 0xA11CE;
    uint256 internal constant BOB_PK = 0xB0B;
    uint256 internal constant CAROL_PK = 0xCA201;
    uint256 internal constant DAVE_PK = 0xDA7E;
    uint256 internal constant RELAYER_PK = 0x2E1A7E2;

    MockToken internal token;
    MockPermit2 internal permit2;
    StreamPay internal sp;

    address internal alice;
    address internal bob;
    address internal carol;
    address internal dave;
    address internal relayer;

    /// @dev Kept identical to IStreamPay's events so tests can `emit` them after `vm.expectEmit`.
    event Transfer(address indexed from, address indexed to, uint256 value);
    event StreamCreated(address indexed user, address indexed author, uint256 encodedRates);
    event StreamRevoked(address indexed user, address indexed author, uint256 encodedRates);
    event Liquidated(address indexed account, address indexed liquidator, uint256 reward, uint256 streamsStopped);
    event ProjectIdClaimed(uint256 indexed projectId, address indexed owner);
    event DefaultSettingsSet(uint256 indexed projectId, uint16 projectFee);
    event UserSettingsSet(uint256 indexed projectId, address indexed user, uint16 projectFee);
    event NonceUsed(address indexed signer, uint8 nonceType, bytes4 selector, uint256 nonce);
    event SponsoredCallCharged(address indexed signer, address indexed relayer, uint256 amount);

    function setUp() public virtual {
        vm.warp(START);
        token = new MockToken("USD Coin", "USDC");
        permit2 = new MockPermit2();
        sp = new StreamPay(IERC20Metadata(address(token)), IPermit2(address(permit2)), LIQUIDATION_WINDOW);
        vm.label(address(token), "USDC");
        vm.label(address(permit2), "Permit2");
        vm.label(address(sp), "StreamPay");

        alice = _user("alice", ALICE_PK);
        bob = _user("bob", BOB_PK);
        carol = _user("carol", CAROL_PK);
        dave = _user("dave", DAVE_PK);
        relayer = vm.addr(RELAYER_PK);
        vm.label(relayer, "relayer");
    }

    // =====================================================================================
    // fixture helpers
    // =====================================================================================

    /// @dev Address of `pk`, labelled, holding INITIAL_TOKENS and with an unlimited token approval
    /// to StreamPay (but none to Permit2).
    function _user(string memory name_, uint256 pk) internal returns (address user) {
        user = vm.addr(pk);
        vm.label(user, name_);
        _fund(user, INITIAL_TOKENS);
    }

    /// @dev A fresh labelled address (and its key) holding nothing and having approved nothing.
    function _newUser(string memory name_) internal returns (address user, uint256 pk) {
        pk = uint256(keccak256(bytes(name_))) % 0xfffffffffffffffffffffffffffffffebaaedce6af48a03bbfd25e8cd0364141 + 1;
        user = vm.addr(pk);
        vm.label(user, name_);
    }

    /// @dev Mints `tokenAmount` base units to `user` and approves StreamPay for all of them.
    function _fund(address user, uint256 tokenAmount) internal {
        token.mint(user, tokenAmount);
        vm.prank(user);
        token.approve(address(sp), type(uint256).max);
    }

    /// @dev `user` deposits `tokenAmount` base units for itself (minting them first), returns the
    /// 18-decimal amount credited.
    function _deposit(address user, uint256 tokenAmount) internal returns (uint256 credited) {
        _fund(user, tokenAmount);
        vm.prank(user);
        sp.deposit(tokenAmount, false);
        return tokenAmount * SCALE;
    }

    function _subscribe(address user, address author, uint96 rate, uint256 projectId) internal {
        vm.prank(user);
        sp.subscribe(author, rate, projectId);
    }

    function _unsubscribe(address user, address author) internal {
        vm.prank(user);
        sp.unsubscribe(author);
    }

    /// @dev `owner` claims a project and sets its default fee to `fee` bps (if non-zero).
    function _claimProject(address owner, uint16 fee) internal returns (uint256 projectId) {
        vm.prank(owner);
        projectId = sp.claimProjectId();
        if (fee != 0) {
            vm.prank(owner);
            sp.setDefaultSettings(IStreamPay.Settings(fee), projectId);
        }
    }

    /// @dev Independent re-implementation of the encodedRates layout.
    function _encodeRates(uint256 income, uint256 outgoing, uint256 projectId) internal pure returns (uint256) {
        return income + outgoing * 2 ** 96 + projectId * 2 ** 192;
    }

    /// @dev Independent re-implementation of the fee carved out of a rate.
    function _feeOf(uint256 rate, uint256 feeBps) internal pure returns (uint256) {
        return rate * feeBps / BPS;
    }

    // =====================================================================================
    // invariant targets (read by forge, as forge-std's StdInvariant)
    // =====================================================================================

    struct FuzzSelector {
        address addr;
        bytes4[] selectors;
    }

    address[] private _targetedContracts;
    address[] private _excludedContracts;
    address[] private _targetedSenders;
    address[] private _excludedSenders;
    FuzzSelector[] private _targetedSelectors;

    function targetContract(address target) internal {
        _targetedContracts.push(target);
    }

    function excludeContract(address target) internal {
        _excludedContracts.push(target);
    }

    function targetSender(address sender) internal {
        _targetedSenders.push(sender);
    }

    function excludeSender(address sender) internal {
        _excludedSenders.push(sender);
    }

    function targetSelector(FuzzSelector memory selector) internal {
        _targetedSelectors.push(selector);
    }

    function targetContracts() public view returns (address[] memory) {
        return _targetedContracts;
    }

    function excludeContracts() public view returns (address[] memory) {
        return _excludedContracts;
    }

    function targetSenders() public view returns (address[] memory) {
        return _targetedSenders;
    }

    function excludeSenders() public view returns (address[] memory) {
        return _excludedSenders;
    }

    function targetSelectors() public view returns (FuzzSelector[] memory) {
        return _targetedSelectors;
    }

    // =====================================================================================
    // bound
    // =====================================================================================

    /// @dev Maps `x` into [min, max] (forge-std's algorithm: values already inside stay unchanged).
    function bound(uint256 x, uint256 min, uint256 max) internal pure returns (uint256 result) {
        require(min <= max, "bound: max < min");
        if (x >= min && x <= max) return x;
        uint256 size = max - min + 1;
        if (x <= 3 && size > x) return min + x;
        if (x >= type(uint256).max - 3 && size > type(uint256).max - x) return max - (type(uint256).max - x);
        if (x > max) {
            uint256 diff = x - max;
            uint256 rem = diff % size;
            if (rem == 0) return max;
            result = min + rem - 1;
        } else {
            uint256 diff = min - x;
            uint256 rem = diff % size;
            if (rem == 0) return min;
            result = max - rem + 1;
        }
    }

    function boundInt(int256 x, int256 min, int256 max) internal pure returns (int256) {
        require(min <= max, "bound: max < min");
        // shift to uint256 space, where int256.min maps to 0
        uint256 ux = uint256(x) ^ (1 << 255);
        uint256 umin = uint256(min) ^ (1 << 255);
        uint256 umax = uint256(max) ^ (1 << 255);
        return int256(bound(ux, umin, umax) ^ (1 << 255));
    }

    // =====================================================================================
    // assertions: each reverts with a message naming both values
    // =====================================================================================

    function fail(string memory err) internal pure {
        revert(err);
    }

    function _fail(string memory kind, string memory a, string memory b, string memory err) private pure {
        string memory m = string.concat(kind, " failed: ", a, " vs ", b);
        if (bytes(err).length != 0) m = string.concat(err, ": ", m);
        revert(m);
    }

    function assertTrue(bool c) internal pure {
        if (!c) revert("assertTrue failed");
    }

    function assertTrue(bool c, string memory err) internal pure {
        if (!c) revert(string.concat(err, ": assertTrue failed"));
    }

    function assertFalse(bool c) internal pure {
        if (c) revert("assertFalse failed");
    }

    function assertFalse(bool c, string memory err) internal pure {
        if (c) revert(string.concat(err, ": assertFalse failed"));
    }

    function assertEq(uint256 a, uint256 b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(uint256 a, uint256 b, string memory err) internal pure {
        if (a != b) _fail("assertEq(uint256)", vm.toString(a), vm.toString(b), err);
    }

    function assertEq(int256 a, int256 b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(int256 a, int256 b, string memory err) internal pure {
        if (a != b) _fail("assertEq(int256)", vm.toString(a), vm.toString(b), err);
    }

    function assertEq(address a, address b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(address a, address b, string memory err) internal pure {
        if (a != b) _fail("assertEq(address)", vm.toString(a), vm.toString(b), err);
    }

    function assertEq(bool a, bool b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(bool a, bool b, string memory err) internal pure {
        if (a != b) _fail("assertEq(bool)", vm.toString(a), vm.toString(b), err);
    }

    function assertEq(bytes32 a, bytes32 b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(bytes32 a, bytes32 b, string memory err) internal pure {
        if (a != b) _fail("assertEq(bytes32)", vm.toString(a), vm.toString(b), err);
    }

    function assertEq(string memory a, string memory b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(string memory a, string memory b, string memory err) internal pure {
        if (keccak256(bytes(a)) != keccak256(bytes(b))) _fail("assertEq(string)", a, b, err);
    }

    function assertEq(bytes memory a, bytes memory b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(bytes memory a, bytes memory b, string memory err) internal pure {
        if (keccak256(a) != keccak256(b)) _fail("assertEq(bytes)", vm.toString(a), vm.toString(b), err);
    }

    function assertEq(address[] memory a, address[] memory b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(address[] memory a, address[] memory b, string memory err) internal pure {
        if (keccak256(abi.encode(a)) != keccak256(abi.encode(b))) {
            _fail("assertEq(address[])", vm.toString(abi.encode(a)), vm.toString(abi.encode(b)), err);
        }
    }

    function assertEq(uint256[] memory a, uint256[] memory b) internal pure {
        assertEq(a, b, "");
    }

    function assertEq(uint256[] memory a, uint256[] memory b, string memory err) internal pure {
        if (keccak256(abi.encode(a)) != keccak256(abi.encode(b))) {
            _fail("assertEq(uint256[])", vm.toString(abi.encode(a)), vm.toString(abi.encode(b)), err);
        }
    }

    function assertNotEq(uint256 a, uint256 b) internal pure {
        assertNotEq(a, b, "");
    }

    function assertNotEq(uint256 a, uint256 b, string memory err) internal pure {
        if (a == b) _fail("assertNotEq(uint256)", vm.toString(a), vm.toString(b), err);
    }

    function assertNotEq(bytes32 a, bytes32 b) internal pure {
        if (a == b) _fail("assertNotEq(bytes32)", vm.toString(a), vm.toString(b), "");
    }

    function assertGt(uint256 a, uint256 b) internal pure {
        assertGt(a, b, "");
    }

    function assertGt(uint256 a, uint256 b, string memory err) internal pure {
        if (a <= b) _fail("assertGt(uint256)", vm.toString(a), vm.toString(b), err);
    }

    function assertGe(uint256 a, uint256 b) internal pure {
        assertGe(a, b, "");
    }

    function assertGe(uint256 a, uint256 b, string memory err) internal pure {
        if (a < b) _fail("assertGe(uint256)", vm.toString(a), vm.toString(b), err);
    }

    function assertLt(uint256 a, uint256 b) internal pure {
        assertLt(a, b, "");
    }

    function assertLt(uint256 a, uint256 b, string memory err) internal pure {
        if (a >= b) _fail("assertLt(uint256)", vm.toString(a), vm.toString(b), err);
    }

    function assertLe(uint256 a, uint256 b) internal pure {
        assertLe(a, b, "");
    }

    function assertLe(uint256 a, uint256 b, string memory err) internal pure {
        if (a > b) _fail("assertLe(uint256)", vm.toString(a), vm.toString(b), err);
    }

    function assertGt(int256 a, int256 b) internal pure {
        assertGt(a, b, "");
    }

    function assertGt(int256 a, int256 b, string memory err) internal pure {
        if (a <= b) _fail("assertGt(int256)", vm.toString(a), vm.toString(b), err);
    }

    function assertGe(int256 a, int256 b) internal pure {
        assertGe(a, b, "");
    }

    function assertGe(int256 a, int256 b, string memory err) internal pure {
        if (a < b) _fail("assertGe(int256)", vm.toString(a), vm.toString(b), err);
    }

    function assertLt(int256 a, int256 b) internal pure {
        assertLt(a, b, "");
    }

    function assertLt(int256 a, int256 b, string memory err) internal pure {
        if (a >= b) _fail("assertLt(int256)", vm.toString(a), vm.toString(b), err);
    }

    function assertLe(int256 a, int256 b) internal pure {
        assertLe(a, b, "");
    }

    function assertLe(int256 a, int256 b, string memory err) internal pure {
        if (a > b) _fail("assertLe(int256)", vm.toString(a), vm.toString(b), err);
    }

    /// @dev |a - b| <= maxDelta
    function assertApproxEqAbs(uint256 a, uint256 b, uint256 maxDelta) internal pure {
        assertApproxEqAbs(a, b, maxDelta, "");
    }

    function assertApproxEqAbs(uint256 a, uint256 b, uint256 maxDelta, string memory err) internal pure {
        uint256 d = a > b ? a - b : b - a;
        if (d > maxDelta) {
            _fail(
                string.concat("assertApproxEqAbs(delta ", vm.toString(d), " > ", vm.toString(maxDelta), ")"),
                vm.toString(a),
                vm.toString(b),
                err
            );
        }
    }
}
