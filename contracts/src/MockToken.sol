// SPDX-License-Identifier: MIT
pragma solidity ^0.8.30;

import {ERC20} from "@openzeppelin/contracts/token/ERC20/ERC20.sol";
import {ERC20Permit} from "@openzeppelin/contracts/token/ERC20/extensions/ERC20Permit.sol";

/// @title MockToken
/// @notice A 6-decimal ERC-20 with EIP-2612 permit and open minting, for dev mode and tests.
contract MockToken is ERC20, ERC20Permit {
    /// @param name_ Token name; also the EIP-712 domain name of its permits (version "1").
    /// @param symbol_ Token symbol.
    constructor(string memory name_, string memory symbol_) ERC20(name_, symbol_) ERC20Permit(name_) {}

    /// @notice Six decimals, like USDC.
    function decimals() public pure override returns (uint8) {
        return 6;
    }

    /// @notice Mints `amount` base units to `to`. Anyone may mint: this is a test token.
    function mint(address to, uint256 amount) external {
        _mint(to, amount);
    }
}
