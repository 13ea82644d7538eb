// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";

/// @title MockToken18
/// @notice An 18-decimal ERC-20 with open minting (like DAI or most non-stablecoins).
contract MockToken18 is ERC20 {
    constructor(string memory name_, string memory symbol_) ERC20(name_, symbol_) {}

    /// @notice Mints `amount` base units to `to`. Anyone may mint: this is a test token.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}

/// @notice Receiver side of HookToken's transfer hook (ERC-777 `tokensReceived` style).
interface ITokenHookReceiver {
    function onTokenReceived(address from, uint256 amount) external;
}

/// @title HookToken
/// @notice An 18-decimal ERC-20 that, like ERC-777, calls the recipient of every transfer back once
/// the balances moved, if the recipient registered for it. A failing hook fails the transfer.
contract HookToken is MockToken18 {
    mapping(address => bool) public hooked;

    constructor() MockToken18("Hook Token", "HOOK") {}

    /// @notice The caller asks to be called back on every transfer it receives.
    function registerHook() external {
        hooked[msg.sender] = true;
    }

    function _update(address from, address to, uint256 value) internal override {
        super._update(from, to, value);
        if (hooked[to]) ITokenHookReceiver(to).onTokenReceived(from, value);
    }
}

/// @title HookMerchant
/// @notice A recipient whose transfer hook tries to call StreamPay (`pay(itself, the victim's whole
/// balance)`) while StreamPay's token transfer to it is in flight, and records what happened.
contract HookMerchant is ITokenHookReceiver {
    address public immutable streamPay;
    address public immutable victim;
    uint256 public attempts;
    bool public lastOk;
    bytes public lastError;

    constructor(address streamPay_, address victim_, HookToken token_) {
        streamPay = streamPay_;
        victim = victim_;
        token_.registerHook();
    }

    function onTokenReceived(address, uint256) external {
        (, bytes memory bal) = streamPay.staticcall(abi.encodeWithSignature("balanceOf(address)", victim));
        uint256 all = abi.decode(bal, (uint256));
        if (all == 0) all = 1;
        attempts++;
        (lastOk, lastError) = streamPay.call(abi.encodeWithSignature("pay(address,uint256)", address(this), all));
    }
}
